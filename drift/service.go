package drift

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grapehq/grape/store"
)

// Service queues drift checks for a cluster's idle configs when they are due.
type Service struct {
	Store   *store.Store
	Cluster string
	// Default is the agent's --drift-schedule.
	Default Schedule
	// Concurrency bounds the drift checks queued or running at once for the
	// cluster (--drift-concurrency).
	Concurrency int
	// Tick is how often due checks are looked for (default 1 minute).
	Tick time.Duration
	// Retry is how soon a pass runs again when the concurrency limit left
	// due checks for later (default 2 s), so a pass over many configs keeps
	// Concurrency checks going instead of waiting a whole Tick for each.
	Retry  time.Duration
	Log    *slog.Logger
	Now    func() time.Time
	Queued func(store.Deployment) // observer (metrics, tests)

	wakeOnce sync.Once
	wake     chan struct{}
}

// Wake makes a waiting Run pass again now: a check just ended, so a deferred
// one may start (the agent's recorder calls it after storing a report).
func (s *Service) Wake() {
	select {
	case s.wakeCh() <- struct{}{}:
	default:
	}
}

func (s *Service) wakeCh() chan struct{} {
	s.wakeOnce.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

// Run looks for due checks every Tick until ctx is done. A pass that finds
// more due configs than Concurrency allows leaves the rest for the next tick,
// so passes never pile up.
func (s *Service) Run(ctx context.Context) {
	tick := s.Tick
	if tick <= 0 {
		tick = time.Minute
	}
	retry := s.Retry
	if retry <= 0 {
		retry = 2 * time.Second
	}
	for {
		wait := tick
		res, err := s.pass(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log().Warn("drift pass failed; retrying next tick", "err", err)
		case res.deferred > 0:
			wait = retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-s.wakeCh():
		}
	}
}

// passResult is what a pass did.
type passResult struct {
	queued   []store.Deployment
	deferred int // due, but over the concurrency limit
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Pass queues the checks that are due now and returns them. Only one agent of
// a cluster runs a pass at a time (an advisory lock), so a fleet never queues
// the same check twice.
func (s *Service) Pass(ctx context.Context) ([]store.Deployment, error) {
	res, err := s.pass(ctx)
	return res.queued, err
}

func (s *Service) pass(ctx context.Context) (passResult, error) {
	var res passResult
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	limit := max(s.Concurrency, 1)
	err := s.Store.WithClusterLock(ctx, "drift:"+s.Cluster, func(ctx context.Context, st *store.Store) error {
		active, err := st.CountActive(ctx, s.Cluster, store.ActionDrift)
		if err != nil {
			return err
		}
		cands, err := st.DriftCandidates(ctx, s.Cluster)
		if err != nil {
			return err
		}
		for _, c := range cands {
			dec := Decide(c, s.Default, now)
			if !dec.Check {
				s.log().Debug("drift check skipped", "config_id", c.Config.ID, "config", c.Config.Name, "reason", dec.Reason)
				continue
			}
			if active >= limit {
				s.log().Debug("drift check deferred: concurrency limit", "config", c.Config.Name, "limit", limit)
				res.deferred++
				continue
			}
			d, err := st.Enqueue(ctx, store.EnqueueParams{
				ClusterID: s.Cluster, ConfigID: c.Config.ID, Action: store.ActionDrift,
				SourceCommit: &dec.Commit, RequestedBy: "drift schedule", MaxAttempts: 1,
			})
			if err != nil {
				return fmt.Errorf("queueing drift check of %s: %w", c.Config.Name, err)
			}
			active++
			res.queued = append(res.queued, d)
			s.log().Info("drift check queued", "config_id", c.Config.ID, "config", c.Config.Name, "deployment_id", d.ID, "reason", dec.Reason)
			if s.Queued != nil {
				s.Queued(d)
			}
		}
		return nil
	})
	if errors.Is(err, store.ErrLocked) {
		return passResult{}, nil // another agent of the cluster is running the pass
	}
	return res, err
}
