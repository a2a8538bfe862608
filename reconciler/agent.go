// Package reconciler is the Grape agent's pull loop: it listens for queued
// deployments of its cluster, claims them atomically, keeps a lease on each
// while it runs, takes back deployments whose agent was lost, and drains on
// shutdown. What a claimed deployment does is the Work it is given.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/internal/errkind"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// Causes a run's context is cancelled with; Work and the agent read them with
// context.Cause to tell a person what happened. They are errkind's (and
// store's) sentinels, the same values terraform's runner reports, so
// errors.Is matches whichever package wrapped them.
var (
	ErrCancelRequested = errkind.ErrCancelRequested
	ErrShutdown        = errkind.ErrShutdown
	ErrLeaseLost       = store.ErrLeaseLost
)

// Work executes one claimed deployment and says how it ended. The agent
// writes that outcome (after the run's logs are flushed).
type Work interface {
	Execute(ctx context.Context, run *Run) store.Outcome
}

// Upkeeper is optional on a Work: the agent calls Upkeep every 10 seconds
// from its maintenance loop, for housekeeping the work's own files need
// (the pipeline discards saved plans whose deployment no longer awaits
// approval: expired, rejected or cancelled on another agent).
type Upkeeper interface {
	Upkeep(ctx context.Context)
}

// WorkFunc adapts a function to Work.
type WorkFunc func(ctx context.Context, run *Run) store.Outcome

// Execute calls f.
func (f WorkFunc) Execute(ctx context.Context, run *Run) store.Outcome { return f(ctx, run) }

// Options configure an agent.
type Options struct {
	ClusterID string
	AgentID   string
	Hostname  string
	Version   string
	// Concurrency is how many deployments run at once (default 1).
	Concurrency int
	// PollInterval bounds how long a job can wait when a notification is lost (default 1s).
	PollInterval time.Duration
	// PollOnly skips LISTEN, for transaction-mode poolers that cannot hold one.
	PollOnly bool
	// Notifier is the process's LISTEN connection; nil: the agent opens one
	// of its own on the connection string given to New.
	Notifier *notify.Notifier
	// Lease is how long a claim stays valid without a heartbeat (default 30s).
	Lease time.Duration
	// HeartbeatInterval renews leases and picks up cancel requests (default 2s).
	HeartbeatInterval time.Duration
	// RescueInterval is how often expired leases of the cluster are looked for (default 5s).
	RescueInterval time.Duration
	// DrainTimeout bounds how long a first shutdown signal waits for running deployments (default 30m).
	DrainTimeout time.Duration
	// Once claims and runs at most one deployment, then returns.
	Once bool
	// WaitNotifyAfter: a deployment queued longer than this is announced
	// (log line and deployment.waiting event, once); 0: only plans awaiting
	// approval past half their timeout are.
	WaitNotifyAfter time.Duration
	// Logs opens a deployment's log stream; nil writes agent lines only to Logger.
	Logs LogOpener
	// OnEvent, when set, observes agent events (metrics).
	Observer Observer
	Logger   *slog.Logger
}

func (o *Options) defaults() error {
	if o.ClusterID == "" {
		return errors.New("reconciler: cluster id is required (--cluster)")
	}
	if o.AgentID == "" {
		return errors.New("reconciler: agent id is required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = min(2*time.Second, o.Lease/3)
	}
	if o.HeartbeatInterval >= o.Lease {
		return fmt.Errorf("reconciler: heartbeat interval %s must be shorter than the lease %s", o.HeartbeatInterval, o.Lease)
	}
	if o.RescueInterval <= 0 {
		o.RescueInterval = 5 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return nil
}

// Agent is one agent process serving one cluster.
type Agent struct {
	st       *store.Store
	opts     Options
	work     Work
	log      *slog.Logger
	notifier *notify.Notifier // nil: poll only
	claiming atomic.Bool      // false once draining, and always under --once

	mu    sync.Mutex
	runs  map[uuid.UUID]*Run
	abort context.CancelCauseFunc
	wg    sync.WaitGroup
}

// New builds an agent. connString is used for the dedicated LISTEN
// connection, unless opts.Notifier is the process's.
func New(st *store.Store, connString string, work Work, opts Options) (*Agent, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	log := opts.Logger.With("cluster_id", opts.ClusterID, "agent_id", opts.AgentID)
	n, err := notifierFor(connString, opts, log)
	if err != nil {
		return nil, err
	}
	return &Agent{
		st:       st,
		opts:     opts,
		work:     work,
		log:      log,
		notifier: n,
		runs:     map[uuid.UUID]*Run{},
	}, nil
}

// Listening reports whether the LISTEN connection is up (for /readyz).
func (a *Agent) Listening() bool {
	if a.notifier == nil {
		return true
	}
	return a.notifier.Alive()
}

// Abort cancels every running deployment at once (the second shutdown
// signal); they end failed with "agent shut down".
func (a *Agent) Abort() {
	a.mu.Lock()
	abort := a.abort
	a.mu.Unlock()
	if abort != nil {
		abort(ErrShutdown)
	}
}

// Run claims and runs deployments until ctx is done (first shutdown signal),
// then stops claiming and waits for running deployments up to the drain
// timeout before cancelling them.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.st.RegisterAgent(ctx, store.Agent{ID: a.opts.AgentID, ClusterID: a.opts.ClusterID, Hostname: a.opts.Hostname, Version: a.opts.Version}); err != nil {
		return err
	}
	a.log.Info("agent started", "concurrency", a.opts.Concurrency, "poll_interval", a.opts.PollInterval.String(), "lease", a.opts.Lease.String(), "poll_only", a.opts.PollOnly)
	a.warnLocalState(ctx)

	// Runs outlive ctx: a first signal only stops claiming.
	runCtx, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abort(ErrShutdown)
	a.mu.Lock()
	a.abort = abort
	a.mu.Unlock()

	// Stop chaining claims (FinishAndClaim) the moment a drain starts.
	a.claiming.Store(!a.opts.Once)
	stopClaiming := context.AfterFunc(ctx, func() { a.claiming.Store(false) })
	defer stopClaiming()
	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	events, resync, unlisten := a.listen()
	defer unlisten()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); a.maintain(loopCtx) }()

	slots := make(chan struct{}, a.opts.Concurrency)
	freed := make(chan struct{}, a.opts.Concurrency)
	poll := time.NewTicker(a.opts.PollInterval)
	defer poll.Stop()
	claimed := 0
	claimBackoff := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5})
	var retry <-chan time.Time // set while backing off from database errors

	for ctx.Err() == nil && !(a.opts.Once && claimed > 0) {
		if retry == nil {
			n, err := a.fillSlots(ctx, runCtx, slots, freed)
			claimed += n
			switch {
			case err != nil && ctx.Err() == nil:
				wait := claimBackoff.Next()
				a.log.Warn("claiming failed; retrying", "err", err, "retry_in", wait.String())
				retry = time.After(wait)
			case err == nil:
				claimBackoff.Reset()
			}
			if a.opts.Once && err == nil {
				break // --once: one deployment started, or nothing queued
			}
		}
		select {
		case <-ctx.Done():
		case <-resync: // (re)connected: events may have been missed
		case <-poll.C:
		case <-freed:
		case <-retry:
			retry = nil
		case ev := <-events:
			if ev.Kind == notify.Cancel {
				a.cancelRequested(ctx, ev.DeploymentID)
			}
		}
	}
	a.claiming.Store(false)
	stopLoop()
	unlisten() // as before: during the drain, cancels arrive with the heartbeat

	a.drain()
	bg.Wait()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.st.AgentStopped(stopCtx, a.opts.AgentID); err != nil {
		a.log.Warn("recording agent stop failed", "err", err)
	}
	a.log.Info("agent stopped", "claimed", claimed)
	return nil
}

// fillSlots claims deployments while slots are free and work is queued. It
// returns how many it started.
func (a *Agent) fillSlots(ctx, runCtx context.Context, slots chan struct{}, freed chan struct{}) (int, error) {
	n := 0
	for ctx.Err() == nil && !(a.opts.Once && n > 0) {
		select {
		case slots <- struct{}{}:
		default:
			return n, nil // all slots busy
		}
		d, err := a.st.Claim(ctx, a.opts.ClusterID, a.opts.AgentID, a.opts.Lease)
		if err != nil {
			<-slots
			if errors.Is(err, store.ErrNotFound) {
				return n, nil
			}
			return n, err
		}
		n++
		a.opts.Observer.Claimed(d)
		a.start(runCtx, d, func() {
			<-slots
			select {
			case freed <- struct{}{}:
			default:
			}
		})
	}
	return n, nil
}

// drain waits for running deployments, cancelling them after the drain timeout.
func (a *Agent) drain() {
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	a.mu.Lock()
	n := len(a.runs)
	a.mu.Unlock()
	if n > 0 {
		a.log.Info("draining: waiting for running deployments", "running", n, "timeout", a.opts.DrainTimeout.String())
	}
	select {
	case <-done:
	case <-time.After(a.opts.DrainTimeout):
		a.log.Warn("drain timeout: cancelling running deployments")
		a.Abort()
		<-done
	}
}

// cancelRequested acts on a cancel notification. Any role may NOTIFY any
// channel, so the notification is only a hint: the run is cancelled only if
// its row says a cancel was requested.
func (a *Agent) cancelRequested(ctx context.Context, id uuid.UUID) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := a.st.GetDeployment(qctx, id)
	if err != nil {
		a.log.Warn("checking a cancel notification failed; the heartbeat will see the request", "deployment_id", id, "err", err)
		return
	}
	if d.CancelRequestedAt == nil {
		a.log.Warn("ignoring a cancel notification the deployment's row does not confirm", "deployment_id", id)
		return
	}
	r.cancel(ErrCancelRequested)
}

// maintain runs the periodic chores: rescue expired leases of the cluster,
// and say the agent is alive.
func (a *Agent) maintain(ctx context.Context) {
	rescue := time.NewTicker(a.opts.RescueInterval)
	defer rescue.Stop()
	alive := time.NewTicker(10 * time.Second)
	defer alive.Stop()
	a.rescueOnce(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-rescue.C:
			a.rescueOnce(ctx)
		case <-alive.C:
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := a.st.AgentHeartbeat(qctx, a.opts.AgentID); err != nil && ctx.Err() == nil {
				a.log.Warn("agent heartbeat failed", "err", err)
			}
			cancel()
			if u, ok := a.work.(Upkeeper); ok {
				u.Upkeep(ctx)
			}
		}
	}
}

func (a *Agent) rescueOnce(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// An approval is orphaned when its agent has not been seen for 3 leases.
	rescued, err := a.st.RescueExpired(qctx, a.opts.ClusterID, max(3*a.opts.Lease, 30*time.Second))
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("rescuing expired deployments failed", "err", err)
		}
		return
	}
	for _, r := range rescued {
		a.opts.Observer.Rescued(r)
		msg := "took back a deployment from a lost agent"
		if strings.HasPrefix(r.Decision.Note, store.ApprovalExpiredReason) {
			msg = "approval expired: deployment cancelled, its config is free again"
		}
		a.log.Warn(msg, "deployment_id", r.Deployment.ID,
			"config_id", r.Deployment.ConfigID, "requeued", r.Decision.Requeue, "note", r.Decision.Note)
	}
	a.warnLongWaits(qctx)
}

// warnLongWaits announces, once per deployment, a plan that has waited for
// approval more than half its config's approval timeout (someone should
// decide before it expires, and the config runs nothing else meanwhile) and
// a deployment queued longer than WaitNotifyAfter: a log line here and a
// deployment.waiting webhook event. The database dedupes, so however many
// agents sweep, each wait is announced by exactly one of them.
func (a *Agent) warnLongWaits(ctx context.Context) {
	waits, err := a.st.NoteLongWaits(ctx, a.opts.ClusterID, a.opts.WaitNotifyAfter)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("noting long waits failed", "err", err)
		}
		return
	}
	for _, w := range waits {
		id := w.DeploymentID
		if w.Reason == store.WaitAwaitingApproval {
			a.log.Warn("deployment waiting long for approval; its config runs nothing else until it is approved, rejected or expires",
				"deployment_id", id, "waiting_since", w.WaitingSince, "expires_at", w.ExpiresAt, "approve", "grape approve "+id.String())
			continue
		}
		log := a.log.With("deployment_id", id, "waiting_since", w.WaitingSince)
		if w.BlockedBy != nil {
			log.Warn("deployment queued long behind another deployment of its config", "blocked_by", *w.BlockedBy)
		} else {
			log.Warn("deployment queued long: no agent of the cluster has taken it (all busy, or none may run it)")
		}
	}
}

// warnLocalState says at start when other agents of the cluster are online
// while configs keep local state: each such config runs only on the agent
// holding its state, so those agents do not share its work (and a config
// that was never applied goes to whichever agent claims it first).
func (a *Agent) warnLocalState(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	risk, err := a.st.LocalStateRiskOf(qctx, a.opts.ClusterID, a.opts.AgentID, store.HolderOfflineAfter)
	if err != nil {
		a.log.Warn("checking for other agents and local-state configs failed", "err", err)
		return
	}
	if len(risk.OtherAgents) > 0 && len(risk.LocalConfigs) > 0 {
		a.log.Warn("other agents of this cluster are online and configs keep their state on an agent's disk (local backend): each such config runs only on the agent holding its state; use the S3 backend to share them",
			"other_agents", risk.OtherAgents, "local_state_configs", risk.LocalConfigs)
	}
}

// RunNow queues a deployment already claimed by this agent — so no other
// agent of the cluster can take it — waiting while its config is busy, runs
// it in this process with the usual lease, heartbeat and log stream, and
// returns it when it has ended (`grape drift check`).
func (a *Agent) RunNow(ctx context.Context, p store.EnqueueParams) (store.Deployment, error) {
	if err := a.st.RegisterAgent(ctx, store.Agent{ID: a.opts.AgentID, ClusterID: a.opts.ClusterID, Hostname: a.opts.Hostname, Version: a.opts.Version}); err != nil {
		return store.Deployment{}, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = a.st.AgentStopped(stopCtx, a.opts.AgentID)
	}()
	for {
		d, err := a.st.EnqueueClaimed(ctx, p, a.opts.AgentID, a.opts.Lease)
		if err == nil {
			a.opts.Observer.Claimed(d)
			runCtx, abort := context.WithCancelCause(context.WithoutCancel(ctx))
			defer abort(nil)
			stop := context.AfterFunc(ctx, func() { abort(ErrShutdown) })
			defer stop()
			a.runOne(runCtx, d)
			return a.st.GetDeployment(context.WithoutCancel(ctx), d.ID)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Deployment{}, err
		}
		a.log.Info("waiting: the config has a deployment running or queued", "config_id", p.ConfigID)
		select {
		case <-ctx.Done():
			return store.Deployment{}, ctx.Err()
		case <-time.After(a.opts.PollInterval):
		}
	}
}
