package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

// Recorder stores drift reports and acts on them: a webhook on drifted,
// error and back-to-in_sync, and auto-remediation for configs that opted in.
type Recorder struct {
	Store *store.Store
	// NotifyURL receives a small JSON POST (--notify-url); empty: none.
	NotifyURL string
	Client    *http.Client
	Log       *slog.Logger
	// Observe, when set, sees every stored report (metrics). It must not block.
	Observe func(store.DriftReport)
}

// Event is the webhook's JSON body.
type Event struct {
	Event      string            `json:"event"` // drift.detected, drift.error, drift.resolved
	Cluster    string            `json:"cluster"`
	Config     string            `json:"config"`
	ConfigID   uuid.UUID         `json:"config_id"`
	ReportID   uuid.UUID         `json:"report_id"`
	Status     store.DriftStatus `json:"status"`
	Commit     string            `json:"commit,omitempty"`
	CheckedAt  time.Time         `json:"checked_at"`
	Error      string            `json:"error,omitempty"`
	Details    json.RawMessage   `json:"details,omitempty"`
	Remediated *uuid.UUID        `json:"remediation_deployment_id,omitempty"`
}

// Record stores the report, then notifies and remediates as configured.
// Only storing can fail the call: a webhook that is down is logged.
func (r *Recorder) Record(ctx context.Context, cfg store.Config, rep store.DriftReport) (store.DriftReport, error) {
	prev, err := r.Store.LatestDriftReports(ctx, cfg.ClusterID, &cfg.ID)
	if err != nil {
		return store.DriftReport{}, err
	}
	stored, err := r.Store.InsertDriftReport(ctx, rep)
	if err != nil {
		return store.DriftReport{}, err
	}
	if r.Observe != nil {
		r.Observe(stored)
	}
	ev := Event{Cluster: cfg.ClusterID, Config: cfg.Name, ConfigID: cfg.ID, ReportID: stored.ID, Status: stored.Status,
		CheckedAt: stored.CheckedAt, Error: ptr.Deref(stored.Error), Commit: ptr.Deref(stored.CommitSHA)}
	switch stored.Status {
	case store.DriftDrifted:
		ev.Event, ev.Details = "drift.detected", stored.Details
		if cfg.AutoRemediate {
			d, err := Remediate(ctx, r.Store, stored, "drift auto-remediation")
			if err != nil {
				r.log().Warn("auto-remediation failed to queue", "config_id", cfg.ID, "config", cfg.Name, "report_id", stored.ID, "err", err)
			} else {
				ev.Remediated = &d.ID
				r.log().Info("auto-remediation queued", "config_id", cfg.ID, "config", cfg.Name, "report_id", stored.ID, "deployment_id", d.ID)
			}
		}
	case store.DriftError:
		ev.Event = "drift.error"
	case store.DriftInSync:
		if len(prev) == 0 || prev[0].Status == store.DriftInSync {
			return stored, nil // nothing new to say
		}
		ev.Event = "drift.resolved"
	}
	r.notify(ctx, ev)
	return stored, nil
}

func (r *Recorder) notify(ctx context.Context, ev Event) {
	if r.NotifyURL == "" {
		return
	}
	body, err := json.Marshal(ev)
	if err != nil {
		r.log().Warn("encoding drift webhook failed", "err", err)
		return
	}
	client := r.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	// A few quick tries: the report is stored either way.
	retry := backoff.New(backoff.Policy{Initial: 500 * time.Millisecond, Max: 2 * time.Second})
	for attempt := 1; ; attempt++ {
		err = r.post(ctx, client, body)
		if err == nil || attempt == 3 {
			break
		}
		if retry.Wait(ctx) != nil {
			return
		}
	}
	if err != nil {
		r.log().Warn("drift webhook failed", "url", redact.URL(r.NotifyURL), "event", ev.Event, "err", err)
	}
}

func (r *Recorder) post(ctx context.Context, client *http.Client, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.NotifyURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "grape-agent")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func (r *Recorder) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}
