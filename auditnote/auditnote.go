// Package auditnote writes what happened to each deployment into the
// customer's git: an event in the note of the deployment's commit
// (refs/notes/grape, gitstore.AddNote), so `git log --notes=grape` on any
// clone reads as the audit trail.
//
// # One sweep for every end
//
// A Writer does not hook into each way a run can end. It sweeps the
// cluster's recently ended deployments (store.RecentEnds) and appends the
// event of each one whose note lacks it: its own runs (woken right after
// each, through Observer), a plan a person rejected in the portal, a run a
// rescuer ended after its agent died, an agent that crashed before its
// note. Events are built from the database row alone, so every agent of a
// fleet writes the same bytes for the same end, and gitstore's merge keeps
// such a block once.
//
// # The remote may be away
//
// Notes are appended in the workspace clone and pushed together. When the
// remote is unreachable they wait there (surviving restarts); the next
// sweep — at start, after each run and every Interval — pushes them. The
// pending count goes to Pending (grape_git_notes_pending) and the log. The
// deployment's outcome never depends on its note.
package auditnote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// Writer keeps the notes of one cluster's deployments up to date.
type Writer struct {
	Git       *gitstore.Store
	Store     *store.Store
	ClusterID string
	// Redactor removes the agent's secrets from every note (on top of
	// gitstore's own checks).
	Redactor *redact.Redactor
	// Engine is "terraform 1.11.4" or the like.
	Engine string
	// Interval between sweeps when nothing wakes the writer; default 1m.
	Interval time.Duration
	// Lookback is how far back ended deployments are swept; default 24h.
	Lookback time.Duration
	// Pending receives the count of notes waiting for the remote.
	Pending func(n int)
	Log     *slog.Logger

	wake chan struct{}
}

func (w *Writer) init() {
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
	}
	if w.Interval <= 0 {
		w.Interval = time.Minute
	}
	if w.Lookback <= 0 {
		w.Lookback = 24 * time.Hour
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
}

// New returns a Writer ready for Wake, Observer and Run.
func New(w Writer) *Writer {
	w.init()
	return &w
}

// Wake asks for a sweep now; it never blocks.
func (w *Writer) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Observer wraps next so that every recorded outcome wakes the writer.
func (w *Writer) Observer(next reconciler.Observer) reconciler.Observer {
	return observer{Observer: next, w: w}
}

type observer struct {
	reconciler.Observer
	w *Writer
}

func (o observer) Finished(d store.Deployment, out store.Outcome, took time.Duration) {
	o.Observer.Finished(d, out, took)
	o.w.Wake()
}

// Run sweeps at start, when woken and every Interval until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	retry := backoff.New(backoff.Policy{Initial: time.Second, Max: w.Interval})
	for {
		if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.Log.Warn("writing git notes failed; retrying", "err", err, "retry_in", retry.Peek().String())
			if backoff.Sleep(ctx, retry.Next()) != nil {
				return
			}
			continue
		}
		retry.Reset()
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// Sweep appends the missing events of recently ended deployments and pushes
// every pending note. A remote that is away is not an error here: the
// notes wait, and the count is reported.
func (w *Writer) Sweep(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ends, err := w.Store.RecentEnds(qctx, w.ClusterID, time.Now().Add(-w.Lookback))
	cancel()
	if err != nil {
		return err
	}
	shas := make([]string, 0, len(ends))
	for _, e := range ends {
		shas = append(shas, *e.CommitSHA)
	}
	notes, err := w.Git.Notes(ctx, shas)
	if err != nil {
		return err
	}
	added := 0
	for _, e := range ends {
		sha := *e.CommitSHA
		for _, ev := range eventsOf(e) {
			if HasEvent(notes[sha], e.ID.String(), string(ev.Status)) {
				continue
			}
			text := w.Redactor.Redact(EventFor(ev, w.Engine).Text())
			if err := w.Git.AppendNote(ctx, sha, text); err != nil {
				if errors.Is(err, gitstore.ErrForbiddenFile) {
					// Never retried into a loop: the event is logged and skipped.
					w.Log.Error("git note refused: it would hold a secret", "deployment_id", e.ID, "err", err)
					continue
				}
				return err
			}
			added++
			// Two ends on one commit (a plan parked, then applied) each
			// see the other's event.
			if notes[sha], err = w.Git.Note(ctx, sha); err != nil {
				return err
			}
		}
	}
	n, err := w.Git.PushPendingNotes(ctx)
	if w.Pending != nil {
		w.Pending(n)
	}
	if err != nil {
		w.Log.Warn("git notes kept in the workspace clone; the remote did not take them, retrying later",
			"pending", n, "err", err)
		return nil
	}
	if added > 0 {
		w.Log.Debug("git notes written", "added", added)
	}
	return nil
}

// eventsOf is the events an end stands for: a plan that waited for a
// person (approved or rejected since) first gets its awaiting_approval
// event, in case the approval came before the sweep that would have
// written it; then the end itself.
func eventsOf(e store.Ended) []store.Ended {
	if e.Status == store.StatusAwaitingApproval || !e.RequireApproval || (e.ApprovedAt == nil && e.RejectedAt == nil) {
		return []store.Ended{e}
	}
	parked := e
	parked.Status = store.StatusAwaitingApproval
	parked.ErrorKind, parked.Error, parked.ApprovedBy, parked.ReviewComment, parked.FinishedAt = nil, nil, nil, nil, nil
	return []store.Ended{parked, e}
}

// HasEvent says whether note holds the event of deployment id at status.
func HasEvent(note, id, status string) bool {
	for _, block := range strings.Split(note, "\n\n") {
		block += "\n"
		if strings.Contains(block, "\nDeployment: "+id+"\n") && strings.Contains(block, "\nStatus: "+status+"\n") {
			return true
		}
	}
	return false
}

// EventFor is the note event of an ended deployment, from its row alone.
func EventFor(e store.Ended, engine string) gitstore.Event {
	d := e.Deployment
	ev := gitstore.Event{
		Deployment:  d.ID.String(),
		ClusterID:   d.ClusterID,
		Config:      e.ConfigName,
		Action:      string(d.Action),
		Status:      string(d.Status),
		ErrorKind:   string(ptr.Deref(d.ErrorKind)),
		Error:       ptr.Deref(d.Error),
		RequestedBy: d.RequestedBy,
		ApprovedBy:  ptr.Deref(d.ApprovedBy),
		Comment:     ptr.Deref(d.ReviewComment),
		Engine:      engine,
		Started:     ptr.Deref(d.StartedAt),
		Finished:    ptr.Deref(d.FinishedAt),
	}
	if d.ConfigVersion != nil {
		ev.ConfigVersion = *d.ConfigVersion
	}
	if ev.ErrorKind == string(store.KindRejected) {
		ev.Outcome = "rejected"
	}
	if len(d.PlanSummary) > 0 {
		var p runner.PlanSummary
		if json.Unmarshal(d.PlanSummary, &p) == nil {
			ev.Plan = &gitstore.PlanCounts{Add: p.Add, Change: p.Change, Destroy: p.Destroy}
			for _, r := range p.Resources {
				if sym := symbol(r.Actions); sym != "" {
					ev.Changed = append(ev.Changed, sym+" "+r.Address)
				}
			}
		}
	}
	ev.Cost = cost(d.Cost)
	if e.DriftStatus != nil {
		ev.Drift = string(*e.DriftStatus)
		var details runner.DriftDetails
		if len(e.DriftDetails) > 0 && json.Unmarshal(e.DriftDetails, &details) == nil {
			for _, r := range details.Resources {
				item := r.Address + ": " + r.Action
				if len(r.Attributes) > 0 {
					item += " (" + strings.Join(r.Attributes, ", ") + ")"
				}
				ev.Drifted = append(ev.Drifted, item)
			}
		}
	}
	return ev
}

// symbol is terraform's plan symbol for a resource's actions.
func symbol(actions []string) string {
	switch strings.Join(actions, ",") {
	case "create":
		return "+"
	case "delete":
		return "-"
	case "update":
		return "~"
	case "delete,create":
		return "-/+"
	case "create,delete":
		return "+/-"
	case "read":
		return "<="
	case "forget":
		return "."
	}
	return ""
}

// cost renders the stored Infracost estimate as "+12.40 USD/month (total
// 80.00 USD/month)", or "" when none was made.
func cost(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var c runner.CostEstimate
	if json.Unmarshal(raw, &c) != nil || c.TotalMonthlyCost == "" {
		return ""
	}
	diff := c.DiffTotalMonthlyCost
	if diff != "" && !strings.HasPrefix(diff, "-") {
		diff = "+" + diff
	}
	if diff == "" {
		return fmt.Sprintf("%s %s/month", c.TotalMonthlyCost, c.Currency)
	}
	return fmt.Sprintf("%s %s/month (total %s %s/month)", diff, c.Currency, c.TotalMonthlyCost, c.Currency)
}
