package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/store"
)

// LogSink receives a deployment's output lines (package logstream in the
// agent; something simpler in tests).
type LogSink interface {
	Writer(stream store.Stream) io.Writer
	Agentf(format string, args ...any)
	// Close makes every line durable; the final status is written after it.
	Close(ctx context.Context) error
}

// LogOpener opens the log sink of a claimed deployment.
type LogOpener func(ctx context.Context, d store.Deployment) (LogSink, error)

// Observer sees what the agent does (metrics). Methods must not block.
type Observer interface {
	Claimed(d store.Deployment)
	// PhaseDone reports a phase the run left (for its duration).
	PhaseDone(d store.Deployment, phase store.Phase, took time.Duration)
	Finished(d store.Deployment, o store.Outcome, took time.Duration)
	Rescued(r store.Rescued)
}

type nopObserver struct{}

func (nopObserver) Claimed(store.Deployment)                                {}
func (nopObserver) PhaseDone(store.Deployment, store.Phase, time.Duration)  {}
func (nopObserver) Finished(store.Deployment, store.Outcome, time.Duration) {}
func (nopObserver) Rescued(store.Rescued)                                   {}

// Run is one claimed deployment while this agent holds it.
type Run struct {
	Deployment store.Deployment
	Logs       LogSink
	Log        *slog.Logger

	agent  *Agent
	cancel context.CancelCauseFunc

	mu           sync.Mutex
	phase        store.Phase
	phaseStarted time.Time
}

// Phase is the phase last recorded.
func (r *Run) Phase() store.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase
}

// SetPhase records the phase the run enters, on the row and in the log. It
// fails with store.ErrLeaseLost when the deployment is no longer ours, which
// is checked on the way into every phase — above all before apply.
func (r *Run) SetPhase(ctx context.Context, p store.Phase) error {
	if err := r.agent.st.SetPhase(ctx, r.Deployment.ID, r.agent.opts.AgentID, p); err != nil {
		if errors.Is(err, store.ErrLeaseLost) {
			r.cancel(ErrLeaseLost)
		}
		return err
	}
	r.endPhase()
	r.mu.Lock()
	r.phase, r.phaseStarted = p, time.Now()
	r.mu.Unlock()
	r.Logs.Agentf("phase: %s", p)
	return nil
}

// endPhase reports the duration of the phase being left.
func (r *Run) endPhase() {
	r.mu.Lock()
	p, started := r.phase, r.phaseStarted
	r.phaseStarted = time.Time{}
	r.mu.Unlock()
	if !started.IsZero() {
		r.agent.opts.Observer.PhaseDone(r.Deployment, p, time.Since(started))
	}
}

// Store gives Work access to the control plane.
func (r *Run) Store() *store.Store { return r.agent.st }

// AgentID is the id of the agent running this deployment.
func (r *Run) AgentID() string { return r.agent.opts.AgentID }

// start runs d in a goroutine that holds one slot. When a run ends while the
// agent is still claiming, the slot's next deployment is claimed together
// with the outcome write (store.FinishAndClaim) and runs in the same slot.
func (a *Agent) start(parent context.Context, d store.Deployment, release func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer release()
		for next := &d; next != nil; {
			next = a.runOne(parent, *next)
		}
	}()
}

// runOne executes one claimed deployment and returns the next one claimed in
// the same commit as its outcome, if any.
func (a *Agent) runOne(parent context.Context, d store.Deployment) *store.Deployment {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	r := &Run{
		Deployment: d,
		agent:      a,
		cancel:     cancel,
		phase:      d.PhaseName(),
		Log:        a.log.With("deployment_id", d.ID, "config_id", d.ConfigID, "action", d.Action),
	}
	a.mu.Lock()
	a.runs[d.ID] = r
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.runs, d.ID)
		a.mu.Unlock()
	}()
	return a.execute(ctx, r)
}

// execute runs Work with a heartbeat beside it, then flushes the logs and
// writes the outcome — in that order, so a client that sees the final status
// has every line.
func (a *Agent) execute(ctx context.Context, r *Run) *store.Deployment {
	started := time.Now()
	r.Log.Debug("deployment claimed", "attempt", r.Deployment.Attempt, "phase", r.Deployment.PhaseName())

	stopBeat := make(chan struct{})
	beatDone := make(chan struct{})
	go func() { defer close(beatDone); a.heartbeat(ctx, r, stopBeat) }()
	stopHeartbeat := sync.OnceFunc(func() { close(stopBeat); <-beatDone })
	defer stopHeartbeat()

	// Writes after the run use a context of their own: the run's may be
	// cancelled, and the outcome must still be recorded.
	after := context.WithoutCancel(ctx)

	logs, err := a.openLogs(ctx, r.Deployment)
	if err != nil {
		r.Log.Error("opening log stream failed", "err", err)
		logs = slogSink{log: r.Log}
	}
	r.Logs = logs
	if r.Deployment.Attempt > 1 && r.Deployment.PhaseName() == store.PhaseClaimed {
		logs.Agentf("attempt %d of %d on agent %s", r.Deployment.Attempt, r.Deployment.MaxAttempts, a.opts.AgentID)
	} else {
		logs.Agentf("claimed by agent %s", a.opts.AgentID)
	}

	outcome := a.safeExecute(ctx, r)
	r.endPhase()
	if ctx.Err() != nil && outcome.Status != store.StatusSucceeded {
		if o, ok := interrupted(ctx, r); ok {
			outcome = o
		}
	}
	leaseLost := errors.Is(context.Cause(ctx), ErrLeaseLost)

	switch {
	case leaseLost:
		logs.Agentf("agent %s stopped this run: %s", a.opts.AgentID, a.whyLost(ctx, r))
	case outcome.Status == store.StatusAwaitingApproval:
		logs.Agentf("plan saved; waiting for approval: grape approve %s (or grape reject)", r.Deployment.ID)
	case outcome.Error != "":
		logs.Agentf("%s: %s", outcome.Status, outcome.Error)
	default:
		logs.Agentf("%s", outcome.Status)
	}
	closeCtx, cancel := context.WithTimeout(after, 10*time.Minute)
	if err := logs.Close(closeCtx); err != nil {
		r.Log.Error("flushing deployment logs failed; some lines may be missing", "err", err)
	}
	cancel()
	// The heartbeat keeps the lease until here: flushing may wait for a
	// database that is briefly away.
	stopHeartbeat()
	if leaseLost {
		return nil
	}
	next, err := a.finish(after, r, outcome)
	if err != nil {
		r.Log.Error("recording the outcome failed", "status", outcome.Status, "err", err)
		return next
	}
	took := time.Since(started)
	a.opts.Observer.Finished(r.Deployment, outcome, took)
	r.Log.Info("deployment finished", "status", outcome.Status, "error_kind", outcome.Kind, "error", outcome.Error, "took", took.Round(time.Millisecond).String())
	if next != nil {
		a.opts.Observer.Claimed(*next)
	}
	return next
}

func (a *Agent) openLogs(ctx context.Context, d store.Deployment) (LogSink, error) {
	if a.opts.Logs == nil {
		return slogSink{log: a.log.With("deployment_id", d.ID)}, nil
	}
	return a.opts.Logs(ctx, d)
}

// safeExecute turns a panic in Work into a failed deployment instead of a
// dead agent holding a lease.
func (a *Agent) safeExecute(ctx context.Context, r *Run) (o store.Outcome) {
	defer func() {
		if p := recover(); p != nil {
			r.Log.Error("work panicked", "panic", p, "stack", string(debug.Stack()))
			o = store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: fmt.Sprintf("internal error in agent: %v", p)}
		}
	}()
	return a.work.Execute(ctx, r)
}

// interrupted maps why a run's context ended to the outcome a person reads.
func interrupted(ctx context.Context, r *Run) (store.Outcome, bool) {
	phase := r.Phase()
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrCancelRequested):
		by := "a user"
		if d, err := r.agent.st.GetDeployment(context.WithoutCancel(ctx), r.Deployment.ID); err == nil && d.CancelRequestedBy != nil && *d.CancelRequestedBy != "" {
			by = *d.CancelRequestedBy
		}
		return store.Outcome{Status: store.StatusCancelled, Kind: store.KindCancelled, Error: fmt.Sprintf("cancelled by %s during %s", by, phase)}, true
	case errors.Is(cause, ErrShutdown):
		return store.Outcome{Status: store.StatusFailed, Kind: store.KindAgentLost, Error: fmt.Sprintf("agent shut down during %s", phase)}, true
	}
	return store.Outcome{}, false
}

// finish writes the outcome, retrying while the database is briefly away.
// While the agent is still claiming, it also claims the slot's next
// deployment in the same commit.
func (a *Agent) finish(ctx context.Context, r *Run, o store.Outcome) (*store.Deployment, error) {
	write := func(ctx context.Context) (*store.Deployment, error) {
		if o.Status == store.StatusAwaitingApproval {
			return nil, a.st.AwaitApproval(ctx, r.Deployment.ID, a.opts.AgentID)
		}
		if a.claiming.Load() {
			next, finishErr, err := a.st.FinishAndClaim(ctx, r.Deployment.ID, a.opts.AgentID, o, a.opts.ClusterID, a.opts.Lease)
			if err == nil {
				return next, finishErr
			}
			r.Log.Debug("finish-and-claim failed; finishing alone", "err", err)
		}
		return nil, a.st.Finish(ctx, r.Deployment.ID, a.opts.AgentID, o)
	}
	// If the database stays away past the lease, a rescuer decides instead.
	retry := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		next, err := write(qctx)
		cancel()
		if err == nil || errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrInvalid) || time.Now().After(deadline) {
			return next, err
		}
		wait := retry.Next()
		r.Log.Warn("writing outcome failed; retrying", "err", err, "retry_in", wait.String())
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// heartbeat renews the lease until stop is closed, and cancels the run when a
// cancel is requested or the lease is lost.
func (a *Agent) heartbeat(ctx context.Context, r *Run, stop <-chan struct{}) {
	t := time.NewTicker(a.opts.HeartbeatInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.HeartbeatInterval)
		res, err := a.st.Heartbeat(qctx, r.Deployment.ID, a.opts.AgentID, a.opts.Lease)
		cancel()
		switch {
		case errors.Is(err, store.ErrLeaseLost):
			r.Log.Warn("lease lost; stopping the run", "why", a.whyLost(ctx, r))
			r.cancel(ErrLeaseLost)
			return
		case err != nil:
			// Before apply, a lease we could not renew may have been given to
			// another agent: stop. Once apply runs, interrupting it would leave
			// infrastructure half-changed, so it finishes and the outcome is
			// reconciled when the database answers again.
			if time.Since(lastOK) > a.opts.Lease && r.Phase() != store.PhaseApply && r.Phase() != store.PhaseOutputs {
				r.Log.Warn("could not renew the lease for longer than the lease; stopping the run", "err", err)
				r.cancel(ErrLeaseLost)
				return
			}
			r.Log.Warn("heartbeat failed", "err", err)
		default:
			lastOK = time.Now()
			if res.CancelRequested {
				r.cancel(ErrCancelRequested)
			}
		}
	}
}

// whyLost says why a run's lease is no longer this agent's, from what its
// row says now: it was deleted, another agent holds it, it already ended
// (a person or a rescuer ended it), or — the database not answering — that
// another agent or a person decides its outcome.
func (a *Agent) whyLost(ctx context.Context, r *Run) string {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	d, err := a.st.GetDeployment(qctx, r.Deployment.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "the deployment's row was deleted (or this agent's role can no longer see it)"
	case err != nil:
		return "its lease could not be renewed; another agent or a person decides its outcome"
	case d.Status.Final():
		return fmt.Sprintf("the deployment was ended (%s) while this agent could not renew its lease", d.Status)
	case d.ClaimedBy != nil && *d.ClaimedBy != a.opts.AgentID:
		return fmt.Sprintf("agent %s has taken the deployment back", *d.ClaimedBy)
	case d.Status == store.StatusQueued:
		return "the deployment was requeued after its lease expired"
	}
	return "its lease expired; another agent or a person decides its outcome"
}

// slogSink is the log sink used when no log stream is configured.
type slogSink struct{ log *slog.Logger }

func (s slogSink) Writer(stream store.Stream) io.Writer { return io.Discard }
func (s slogSink) Agentf(format string, args ...any)    { s.log.Info(fmt.Sprintf(format, args...)) }
func (s slogSink) Close(context.Context) error          { return nil }
