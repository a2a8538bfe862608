// Package webhook delivers a cluster's notifications (deployment and drift
// events) to its webhook targets. The database writes each event into an
// outbox in the same transaction as the change it reports; an agent of the
// cluster claims due rows, POSTs them signed with the target's secret and
// records the outcome, retrying with the project's one backoff schedule.
//
// Delivery is at least once: a receiver deduplicates by X-Grape-Delivery.
// Events of one deployment reach a target in order, because only the oldest
// undelivered one is ever due. The deliverer runs beside the claim loop and
// never blocks a run: a slow or dead receiver only delays its own events. A
// process that ends after one run delivers that run's events with Flush, for
// a bounded time, before it exits.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/store"
)

// Header names of a delivery.
const (
	HeaderSignature = "X-Grape-Signature" // sha256=<hex HMAC-SHA256 of the body>
	HeaderEvent     = "X-Grape-Event"
	HeaderDelivery  = "X-Grape-Delivery" // the outbox id: the same on every retry
)

// Sign is the X-Grape-Signature value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature in constant time, as a receiver should.
func Verify(secret string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// Options tune a Deliverer; zero values take the defaults.
type Options struct {
	ClusterID string
	Client    *http.Client  // default: 10 s timeout
	Interval  time.Duration // poll for due notifications (default 1 s)
	Retry     backoff.Policy
	// MaxAttempts before a notification is given up (default 15: with the
	// default schedule, about an hour and a half of retries).
	MaxAttempts int
	Logger      *slog.Logger
}

// Deliverer sends one cluster's notifications.
type Deliverer struct {
	st   *store.Store
	opts Options
}

// New returns a Deliverer for opts.ClusterID on st (the agent's store).
func New(st *store.Store, opts Options) *Deliverer {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Retry == (backoff.Policy{}) {
		opts.Retry = backoff.Policy{Initial: 2 * time.Second, Max: 10 * time.Minute, Jitter: 0.5}
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 15
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Deliverer{st: st, opts: opts}
}

// Run delivers until ctx ends. Database errors are logged and retried on the
// next tick: notifications wait in the outbox meanwhile.
func (d *Deliverer) Run(ctx context.Context) error {
	t := time.NewTicker(d.opts.Interval)
	defer t.Stop()
	for {
		n, err := d.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("delivering notifications", "err", err)
		}
		if n > 0 && err == nil {
			continue // there may be more, or the next event of a deployment
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce claims the due notifications, delivers them and records each
// outcome; it returns how many it attempted.
func (d *Deliverer) RunOnce(ctx context.Context) (int, error) {
	lease := d.opts.Client.Timeout + 30*time.Second
	ns, err := d.st.ClaimNotifications(ctx, d.opts.ClusterID, 20, lease)
	if err != nil {
		return 0, err
	}
	// Outcomes are recorded even when ctx ends meanwhile: a row left
	// locked would wait out its lease before anyone retried it.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, n := range ns {
		err := d.deliver(ctx, n)
		if err == nil {
			if err := d.st.NotificationDelivered(rec, n.ID); err != nil {
				return len(ns), err
			}
			continue
		}
		giveUp := n.Attempts >= d.opts.MaxAttempts
		log := d.opts.Logger.With("notification", n.ID, "event", n.Event, "attempt", n.Attempts, "err", err)
		if giveUp {
			log.Error("webhook delivery given up")
		} else {
			log.Warn("webhook delivery failed; will retry")
		}
		next := time.Now().Add(jittered(d.opts.Retry, n.Attempts))
		if err := d.st.NotificationFailed(rec, n.ID, err.Error(), next, giveUp); err != nil {
			return len(ns), err
		}
	}
	return len(ns), nil
}

// Flush delivers until none of the cluster's notifications numbered above
// after (see store.NotifyOutboxHead) is left to send, or wait has passed, and
// returns how many were settled (delivered, or given up) and what is still
// pending. Processes that end after one run (agent --once, dev --once, drift
// check) call it so the run's events go out before they exit. A dead
// receiver costs at most wait plus one request's timeout (wait 0: one
// attempt), and what is left stays in the outbox for the next agent.
func (d *Deliverer) Flush(ctx context.Context, after int64, wait time.Duration) (int, store.PendingNotifications, error) {
	deadline := time.Now().Add(wait)
	settled := 0
	for {
		before, err := d.st.PendingNotificationsAfter(ctx, d.opts.ClusterID, after)
		if err != nil {
			return settled, before, err
		}
		n, err := d.RunOnce(ctx)
		if err != nil {
			return settled, before, err
		}
		left, err := d.st.PendingNotificationsAfter(ctx, d.opts.ClusterID, after)
		if err != nil {
			return settled, left, err
		}
		settled += max(0, before.Count-left.Count)
		if left.Count == 0 || !time.Now().Before(deadline) {
			return settled, left, nil
		}
		if n > 0 {
			continue // the next event of a deployment may be due now
		}
		// Until the next retry is due, polling at most every Interval (a
		// failure recorded elsewhere may make another row due sooner).
		sleep := min(d.opts.Interval, time.Until(deadline), max(time.Until(left.NextAttempt), 10*time.Millisecond))
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return settled, left, nil
		case <-t.C:
		}
	}
}

// jittered is the schedule's delay before retry number attempt.
func jittered(p backoff.Policy, attempt int) time.Duration {
	b := backoff.New(p)
	var d time.Duration
	for range attempt {
		d = b.Next()
	}
	return d
}

func (d *Deliverer) deliver(ctx context.Context, n store.Notification) error {
	body, err := Body(n.Format, n.Event, n.Payload)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "grape-webhook")
	req.Header.Set(HeaderEvent, n.Event)
	req.Header.Set(HeaderDelivery, strconv.FormatInt(n.ID, 10))
	req.Header.Set(HeaderSignature, Sign(n.Secret, body))
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", redactURL(n.URL), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST %s: %s", redactURL(n.URL), resp.Status)
	}
	return nil
}

// redactURL keeps a URL's secrets (Slack puts them in the path) out of logs
// and rows: scheme and host only.
func redactURL(raw string) string {
	req, err := http.NewRequest(http.MethodGet, raw, nil)
	if err != nil {
		return "the webhook URL"
	}
	return req.URL.Scheme + "://" + req.URL.Host + "/…"
}

// Body is what a target receives: the event's JSON as stored, or a Slack
// incoming-webhook message.
func Body(format, event string, payload json.RawMessage) ([]byte, error) {
	switch format {
	case "json":
		return payload, nil
	case "slack":
		var p struct {
			Cluster    string `json:"cluster_id"`
			Config     string `json:"config_name"`
			Deployment string `json:"deployment_id"`
			Action     string `json:"action"`
			Error      string `json:"error"`
			// deployment.waiting
			Reason    string `json:"reason"`
			Since     string `json:"waiting_since"`
			Expires   string `json:"expires_at"`
			BlockedBy string `json:"blocked_by"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("reading payload: %w", err)
		}
		text := fmt.Sprintf("*%s* — cluster `%s`, config `%s`", event, p.Cluster, p.Config)
		if p.Deployment != "" {
			text += fmt.Sprintf(", %s `%s`", p.Action, p.Deployment)
		}
		if p.Error != "" {
			text += ": " + p.Error
		}
		switch p.Reason {
		case store.WaitAwaitingApproval:
			text += fmt.Sprintf(": awaiting approval since %s, expires at %s", p.Since, p.Expires)
		case store.WaitQueued:
			text += ": queued since " + p.Since
			if p.BlockedBy != "" {
				text += fmt.Sprintf(", behind deployment `%s`", p.BlockedBy)
			}
		}
		return json.Marshal(map[string]string{"text": text})
	}
	return nil, errors.New("unknown webhook format " + format)
}
