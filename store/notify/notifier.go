// Package notify is Grape's one LISTEN/NOTIFY client. A process holds one
// Notifier: one dedicated connection that LISTENs on the union of the
// channels its subscribers want, reconnects with one backoff policy, and
// fans each notification out to the subscribers of its channel, decoded into
// the channel's typed payload (topics.go).
//
// Notifications are hints. A subscriber reads the database itself, and polls
// as well, because a notification can be lost: while the connection is down,
// or when the subscriber is slow. Each subscription therefore has a Resync
// channel that says "you may have missed something: read again", sent once
// the subscription is live, after every reconnect, and when its buffer
// overflowed.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/grapehq/grape/internal/backoff"
)

// Options configure a Notifier.
type Options struct {
	// Name is the connection's application_name, so an operator can find it
	// in pg_stat_activity (default "grape-listener").
	Name string
	// Logger receives connection losses and malformed payloads.
	Logger *slog.Logger
	// Reconnect is the backoff between connection attempts (default 100 ms
	// doubling to 5 s, half jitter).
	Reconnect backoff.Policy
	// PingInterval is how long the connection may stay silent before it is
	// checked with a round trip, so a connection the network dropped without
	// a word is noticed (default 15 s).
	PingInterval time.Duration
}

// Timeouts of the connection's own round trips.
const (
	connectTimeout = 10 * time.Second
	commandTimeout = 5 * time.Second
	closeTimeout   = time.Second
	// stableAfter: a connection that stayed up this long was healthy, so the
	// next loss starts the backoff over.
	stableAfter = 30 * time.Second
)

// Notifier multiplexes subscriptions over one LISTEN connection. The
// connection is opened with the first subscription (or Hold) and closed when
// the last one is closed (or released), so a Notifier needs no Run or Close
// of its own. It is safe for concurrent use.
type Notifier struct {
	cfg  *pgx.ConnConfig
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	subs      map[string]map[*entry]struct{} // channel → subscribers
	changed   bool                           // subs changed since the connection last caught up
	interrupt context.CancelFunc             // ends the current wait, so LISTENs can be issued
	alive     bool                           // connected and LISTENing on every wanted channel
	live      map[string]bool                // channels LISTENed on the current connection
	gen       int                            // which connection loop owns alive
	holds     int                            // Hold calls not yet released
	stop      context.CancelFunc             // ends the connection loop (nil: none runs)
	done      chan struct{}                  // closed when that loop has ended
}

// entry is one subscription, untyped.
type entry struct {
	channel string
	deliver func(payload string) error // decodes, filters and hands over; never blocks
	resync  chan struct{}
}

// New returns a Notifier for the database at connString. No connection is
// made until the first Subscribe.
func New(connString string, opts Options) (*Notifier, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		// pgx's parse errors already redact the password.
		return nil, fmt.Errorf("notifier: parsing database URL: %w", err)
	}
	if opts.Name == "" {
		opts.Name = "grape-listener"
	}
	cfg.RuntimeParams["application_name"] = opts.Name
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Reconnect == (backoff.Policy{}) {
		opts.Reconnect = backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 15 * time.Second
	}
	return &Notifier{cfg: cfg, opts: opts, log: opts.Logger, subs: map[string]map[*entry]struct{}{}}, nil
}

// Alive reports whether the connection is up and LISTENing on every
// subscribed channel (for /readyz). While it is not, subscribers must poll.
func (n *Notifier) Alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.alive
}

// Subscription receives one topic's payloads until Close.
type Subscription[T any] struct {
	// C receives payloads in the order PostgreSQL delivered them. When it is
	// full a payload is dropped and Resync fires instead.
	C <-chan T
	// Resync receives a value (it holds at most one) whenever payloads may
	// have been missed: once the subscription is live (its channel is
	// LISTENed), after every reconnect, and when C overflowed. Read the
	// state from the database again.
	Resync <-chan struct{}

	n    *Notifier
	e    *entry
	once sync.Once
}

// Subscribe starts delivering t's payloads; buffer is the capacity of C (at
// least 1). It does not wait for the connection: Resync fires once the
// subscription is live. Subscribing before reading the state from the
// database means no change committed after the read goes unannounced: it is
// delivered on C, or Resync fires after it.
func Subscribe[T any](n *Notifier, t Topic[T], buffer int) *Subscription[T] {
	c := make(chan T, max(buffer, 1))
	resync := make(chan struct{}, 1)
	e := &entry{channel: t.channel, resync: resync}
	e.deliver = func(payload string) error {
		v, err := t.parse(payload)
		if err != nil {
			return err
		}
		if t.keep != nil && !t.keep(v) {
			return nil
		}
		select {
		case c <- v:
		default:
			signal(resync) // the subscriber is behind: it re-reads instead
		}
		return nil
	}
	n.add(e)
	return &Subscription[T]{C: c, Resync: resync, n: n, e: e}
}

// Close ends the subscription; nothing is delivered after it returns. Closing
// the last subscription closes the connection and waits for that.
func (s *Subscription[T]) Close() {
	s.once.Do(func() { s.n.remove(s.e) })
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // one pending signal is enough
	}
}

func (n *Notifier) add(e *entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.subs[e.channel]
	if set == nil {
		set = map[*entry]struct{}{}
		n.subs[e.channel] = set
		n.changed = true
		if n.interrupt != nil {
			n.interrupt()
		}
	}
	set[e] = struct{}{}
	if n.live[e.channel] {
		signal(e.resync) // already LISTENed: the subscription is live now
	}
	n.startLocked()
}

// startLocked starts the connection loop unless it runs.
func (n *Notifier) startLocked() {
	if n.stop != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	n.gen++
	n.stop, n.done = stop, make(chan struct{})
	go n.run(ctx, n.gen, n.done)
}

// stopIfIdleLocked ends the connection loop when nothing needs it and
// returns what to wait on (outside the lock), or nil.
func (n *Notifier) stopIfIdleLocked() chan struct{} {
	if len(n.subs) > 0 || n.holds > 0 || n.stop == nil {
		return nil
	}
	n.stop()
	done := n.done
	n.stop, n.done, n.alive, n.live = nil, nil, false, nil
	return done
}

// Hold keeps the connection up while no one is subscribed, until release is
// called: a server whose subscribers come and go (the portal's live
// terminals) then does not reconnect for each.
func (n *Notifier) Hold() (release func()) {
	n.mu.Lock()
	n.holds++
	n.startLocked()
	n.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			n.holds--
			done := n.stopIfIdleLocked()
			n.mu.Unlock()
			if done != nil {
				<-done
			}
		})
	}
}

// Subscribers counts open subscriptions (for tests and metrics).
func (n *Notifier) Subscribers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	count := 0
	for _, set := range n.subs {
		count += len(set)
	}
	return count
}

func (n *Notifier) remove(e *entry) {
	n.mu.Lock()
	set := n.subs[e.channel]
	delete(set, e)
	if len(set) == 0 {
		delete(n.subs, e.channel)
		n.changed = true
		if n.interrupt != nil {
			n.interrupt()
		}
	}
	done := n.stopIfIdleLocked()
	n.mu.Unlock()
	if done != nil {
		<-done
	}
}

// run keeps a connection up until ctx ends (the last subscription closed).
func (n *Notifier) run(ctx context.Context, gen int, done chan struct{}) {
	defer close(done)
	b := backoff.New(n.opts.Reconnect)
	for {
		var up time.Time // when the connection started LISTENing
		err := n.session(ctx, gen, &up)
		n.setAlive(gen, false)
		if ctx.Err() != nil {
			return
		}
		if !up.IsZero() && time.Since(up) > stableAfter {
			b.Reset()
		}
		wait := b.Next()
		n.log.Warn("LISTEN connection lost; subscribers poll until it is back", "err", err, "retry_in", wait.String(), "attempt", b.Attempt())
		if backoff.Sleep(ctx, wait) != nil {
			return
		}
	}
}

func (n *Notifier) setAlive(gen int, alive bool) {
	n.mu.Lock()
	if n.gen == gen {
		n.alive = alive
		if !alive {
			n.live = nil
		}
	}
	n.mu.Unlock()
}

// session holds one connection: it LISTENs on what is wanted, then waits for
// notifications, catching up whenever the subscriptions change.
func (n *Notifier) session(ctx context.Context, gen int, up *time.Time) error {
	connCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	conn, err := pgx.ConnectConfig(connCtx, n.cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	listened := map[string]bool{}
	for {
		n.mu.Lock()
		changed := n.changed || up.IsZero()
		n.mu.Unlock()
		if changed {
			// On a new connection every channel is fresh, so every
			// subscriber re-reads what it may have missed meanwhile.
			fresh, err := n.catchUp(ctx, conn, listened)
			if err != nil {
				return err
			}
			n.mu.Lock()
			if n.gen == gen {
				n.alive = true
				n.live = maps.Clone(listened)
			}
			for ch := range fresh {
				for e := range n.subs[ch] {
					signal(e.resync)
				}
			}
			n.mu.Unlock()
			if up.IsZero() {
				*up = time.Now()
			}
		}

		n.mu.Lock()
		if n.changed {
			n.mu.Unlock()
			continue
		}
		waitCtx, interrupt := context.WithTimeout(ctx, n.opts.PingInterval)
		n.interrupt = interrupt
		n.mu.Unlock()

		msg, err := conn.WaitForNotification(waitCtx)

		n.mu.Lock()
		n.interrupt = nil
		n.mu.Unlock()
		waitErr := waitCtx.Err()
		interrupt()
		if msg != nil {
			n.dispatch(msg.Channel, msg.Payload)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case waitErr == nil || conn.IsClosed():
			return fmt.Errorf("waiting for notifications: %w", err)
		case errors.Is(waitErr, context.DeadlineExceeded):
			// Silent for a while: make sure the server is still there.
			pingCtx, cancel := context.WithTimeout(ctx, commandTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("checking the idle connection: %w", err)
			}
		}
		// Otherwise the wait was interrupted by a subscription change,
		// which the next round catches up with.
	}
}

// catchUp LISTENs on every wanted channel not yet listened and UNLISTENs the
// ones nobody wants; it returns the newly listened channels.
func (n *Notifier) catchUp(ctx context.Context, conn *pgx.Conn, listened map[string]bool) (map[string]bool, error) {
	n.mu.Lock()
	want := make(map[string]bool, len(n.subs))
	for ch := range n.subs {
		want[ch] = true
	}
	n.changed = false
	n.mu.Unlock()

	fresh := map[string]bool{}
	for ch := range want {
		if listened[ch] {
			continue
		}
		if err := n.exec(ctx, conn, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return nil, fmt.Errorf("LISTEN %s: %w", ch, err)
		}
		listened[ch] = true
		fresh[ch] = true
	}
	for ch := range listened {
		if want[ch] {
			continue
		}
		if err := n.exec(ctx, conn, "UNLISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return nil, fmt.Errorf("UNLISTEN %s: %w", ch, err)
		}
		delete(listened, ch)
	}
	return fresh, nil
}

func (n *Notifier) exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

// dispatch hands one notification to its channel's subscribers. A payload
// that does not decode is logged once and dropped: any role may NOTIFY
// anything, so it says nothing about the database.
func (n *Notifier) dispatch(channel, payload string) {
	n.mu.Lock()
	var bad error
	for e := range n.subs[channel] {
		if err := e.deliver(payload); err != nil {
			bad = err
		}
	}
	n.mu.Unlock()
	if bad != nil {
		n.log.Warn("ignoring a malformed notification", "channel", channel, "err", bad)
	}
}
