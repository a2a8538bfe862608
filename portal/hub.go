package portal

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// logsChannel is where the deployment_logs trigger announces each inserted
// batch as "<deployment id>:<last seq>".
const logsChannel = "grape_logs"

// hub holds the server's one LISTEN connection and fans notifications out to
// the open live terminals, so a hundred open pages cost one connection, not a
// hundred. A notification only wakes a subscriber; the subscriber reads the
// table itself, so a notification lost while the connection was down costs
// nothing: every subscriber is woken after a reconnect, and the terminals
// read the table on their status poll while the connection is down.
type hub struct {
	connString string
	log        *slog.Logger
	connected  atomic.Bool

	mu   sync.Mutex
	subs map[uuid.UUID]map[chan struct{}]struct{}
}

func newHub(connString string, log *slog.Logger) *hub {
	return &hub{connString: connString, log: log, subs: map[uuid.UUID]map[chan struct{}]struct{}{}}
}

// subscribe returns a channel that receives a value (coalesced: it holds at
// most one) whenever new lines of deployment id may be there.
func (h *hub) subscribe(id uuid.UUID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[id] == nil {
		h.subs[id] = map[chan struct{}]struct{}{}
	}
	h.subs[id][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[id], ch)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already has a pending wake-up
	}
}

func (h *hub) wake(id uuid.UUID) {
	h.mu.Lock()
	for ch := range h.subs[id] {
		wake(ch)
	}
	h.mu.Unlock()
}

func (h *hub) wakeAll() {
	h.mu.Lock()
	for _, set := range h.subs {
		for ch := range set {
			wake(ch)
		}
	}
	h.mu.Unlock()
}

// subscribers counts open subscriptions (tests).
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.subs {
		n += len(set)
	}
	return n
}

// run keeps the LISTEN connection up until ctx ends, reconnecting with
// capped exponential backoff.
func (h *hub) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := h.listenOnce(ctx)
		h.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond // it was up for a while: a fresh failure
		}
		h.log.Warn("LISTEN connection for live logs lost; terminals poll until it is back", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (h *hub) listenOnce(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(h.connString)
	if err != nil {
		return fmt.Errorf("parsing database URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "grape-portal-listener"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+logsChannel); err != nil {
		return fmt.Errorf("LISTEN %s: %w", logsChannel, err)
	}
	h.connected.Store(true)
	// Lines may have arrived while no one listened: everyone reads again.
	h.wakeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for notification: %w", err)
		}
		rawID, _, _ := strings.Cut(n.Payload, ":")
		id, err := uuid.Parse(rawID)
		if err != nil {
			h.log.Warn("ignoring malformed grape_logs notification", "payload", n.Payload)
			continue
		}
		h.wake(id)
	}
}
