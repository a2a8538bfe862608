package statehandoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// Options configure an agent's handoff service.
type Options struct {
	Store *store.Store
	// Notifier wakes the service on the cluster's move events; nil: it
	// polls only.
	Notifier  *notify.Notifier
	ClusterID string
	AgentID   string
	// State is the agent's local state area.
	State localstate.Dir
	// Addr is --state-handoff-addr: where this agent listens to receive a
	// state, and the address it publishes. Empty: it can send, not receive.
	Addr string
	// Poll is how often open moves are read besides notifications (default 2 s).
	Poll   time.Duration
	Logger *slog.Logger
}

// Service runs an agent's side of state moves: it receives the moves the
// agent is asked to receive (with Addr set) and sends the states it holds
// when their receiver listens. Every agent runs one.
type Service struct {
	o Options

	mu        sync.Mutex
	busy      map[uuid.UUID]bool
	receiving bool // one listener at a time: they share Addr
	wg        sync.WaitGroup
}

// New returns a Service; Run starts it.
func New(o Options) *Service {
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Logger = o.Logger.With("component", "statehandoff")
	return &Service{o: o, busy: map[uuid.UUID]bool{}}
}

// ValidateAddr checks a --state-handoff-addr: HOST:PORT that other agents
// can dial (the address is published as given, so not 0.0.0.0).
func ValidateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT (e.g. 10.0.0.5:7443), got %q", addr)
	}
	if host == "" {
		return fmt.Errorf("%q has no host: give an address the cluster's other agents can dial (e.g. 10.0.0.5:%s)", addr, port)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q cannot be dialled by other agents: give this machine's address (e.g. 10.0.0.5:%s)", addr, port)
	}
	return nil
}

// Run serves until ctx ends, then waits for moves under way to stop.
func (s *Service) Run(ctx context.Context) error {
	defer s.wg.Wait()
	var events <-chan notify.StateMoveEvent
	var resync <-chan struct{}
	if s.o.Notifier != nil {
		sub := notify.Subscribe(s.o.Notifier, notify.StateMoves(s.o.ClusterID), 16)
		defer sub.Close()
		events, resync = sub.C, sub.Resync
	}
	advertised := false
	tick := time.NewTicker(s.o.Poll)
	defer tick.Stop()
	for {
		if !advertised {
			advertised = s.advertise(ctx)
		}
		s.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case <-resync:
		case <-tick.C:
		}
	}
}

// advertise records the agent's handoff address (or that it has none) on
// its agents row, so `grape state move` refuses a receiver that cannot
// receive. The row exists once the claim loop registered the agent.
func (s *Service) advertise(ctx context.Context) bool {
	var addr *string
	if s.o.Addr != "" {
		addr = &s.o.Addr
	}
	err := s.o.Store.SetAgentStateHandoff(ctx, s.o.AgentID, addr)
	if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		s.o.Logger.Warn("recording the state handoff address failed", "err", err)
	}
	return err == nil
}

func (s *Service) tick(ctx context.Context) {
	expired, err := s.o.Store.ExpireStateMoves(ctx, s.o.ClusterID)
	if err != nil && ctx.Err() == nil {
		s.o.Logger.Warn("expiring state moves failed", "err", err)
	}
	for _, m := range expired {
		s.o.Logger.Warn("state move timed out", "move", m.ID, "config_id", m.ConfigID, "error", *m.Error)
	}
	moves, err := s.o.Store.OpenStateMoves(ctx, s.o.ClusterID, s.o.AgentID)
	if err != nil {
		if ctx.Err() == nil {
			s.o.Logger.Warn("reading open state moves failed", "err", err)
		}
		return
	}
	for _, m := range moves {
		switch {
		case m.ToAgent == s.o.AgentID && m.Status == store.MoveRequested:
			if s.o.Addr == "" {
				s.fail(ctx, m, fmt.Sprintf("agent %s runs without --state-handoff-addr, so it cannot receive a state: restart it with that flag and move again; nothing was moved", s.o.AgentID))
				continue
			}
			s.start(ctx, m, true, s.receive)
		case m.FromAgent == s.o.AgentID && m.Status == store.MoveListening:
			s.start(ctx, m, false, s.send)
		}
	}
}

// start runs fn for m once at a time (and one receive at a time).
func (s *Service) start(ctx context.Context, m store.StateMove, receive bool, fn func(context.Context, store.StateMove)) {
	s.mu.Lock()
	if s.busy[m.ID] || (receive && s.receiving) {
		s.mu.Unlock()
		return
	}
	s.busy[m.ID] = true
	if receive {
		s.receiving = true
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.busy, m.ID)
			if receive {
				s.receiving = false
			}
			s.mu.Unlock()
		}()
		mctx, cancel := context.WithDeadline(ctx, m.ExpiresAt)
		defer cancel()
		fn(mctx, m)
	}()
}

// fail ends the move as failed with reason, logged once here.
func (s *Service) fail(ctx context.Context, m store.StateMove, reason string) {
	// The move's own context may be what ended: the record must still land.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ok, err := s.o.Store.FailStateMove(ctx, m.ID, reason)
	switch {
	case err != nil:
		s.o.Logger.Error("recording a failed state move failed", "move", m.ID, "reason", reason, "err", err)
	case ok:
		s.o.Logger.Warn("state move failed", "move", m.ID, "config_id", m.ConfigID, "from", m.FromAgent, "to", m.ToAgent, "reason", reason)
	}
}

// awaitFinal re-reads the move until it ended or ctx does, and returns the
// last row read. The database is the arbiter of a move's outcome.
func (s *Service) awaitFinal(ctx context.Context, id uuid.UUID) (store.StateMove, error) {
	b := backoff.New(backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second})
	var last store.StateMove
	var lastErr error
	for {
		// Reads outlive the move's deadline by a little: the outcome of
		// a move that just ended must still be learnt.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		m, err := s.o.Store.GetStateMove(rctx, id)
		cancel()
		if err == nil {
			last, lastErr = m, nil
			if m.Status.Final() {
				return m, nil
			}
		} else {
			lastErr = err
		}
		if err := b.Wait(ctx); err != nil {
			if lastErr != nil {
				return last, lastErr
			}
			return last, nil
		}
	}
}
