package logstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/store"
)

const (
	// followPoll re-reads even without a notification. Status changes are
	// never notified (a NOTIFY per claim and finish would serialise the
	// agents' commits), so this is how a follower sees the final status
	// that comes just after the last line; it is also the fallback should a
	// grape_logs notification be missed.
	followPoll = 250 * time.Millisecond
	// followPage is how many lines one read returns.
	followPage = 1000
	// followMaxBackoff caps the wait between reconnects.
	followMaxBackoff = 3 * time.Second
)

// emitError marks an error returned by the caller's emit function.
type emitError struct{ err error }

func (e emitError) Error() string { return e.err.Error() }
func (e emitError) Unwrap() error { return e.err }

// Follow calls emit for every line of deployment id after afterSeq, once and
// in seq order, live, until the deployment has a final status and every line
// is read; it returns that status. It LISTENs on grape_logs, re-reads the
// status every 250 ms (status changes are not notified), and survives a
// database restart by reconnecting and re-reading from the last line it
// emitted. Errors before the first successful read (a wrong URL, an unknown
// deployment: store.ErrNotFound) and errors from emit are returned at once;
// later ones are retried until ctx ends.
//
// Every line is there once the status is final because the agent closes its
// log stream (all lines committed) before it writes the final status.
func Follow(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, afterSeq int64, emit func(store.LogLine) error) (store.Status, error) {
	f := &follower{st: store.New(pool), pool: pool, id: id, last: afterSeq, emit: emit}
	backoff := 100 * time.Millisecond
	for {
		status, err := f.session(ctx)
		if err == nil {
			return status, nil
		}
		var ee emitError
		switch {
		case errors.As(err, &ee):
			return "", ee.err
		case ctx.Err() != nil:
			return "", fmt.Errorf("following logs of deployment %s: %w", id, context.Cause(ctx))
		case errors.Is(err, store.ErrNotFound), !f.readOnce:
			return "", fmt.Errorf("following logs of deployment %s: %w", id, err)
		}
		if f.progressed {
			backoff = 100 * time.Millisecond
		}
		f.progressed = false
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return "", fmt.Errorf("following logs of deployment %s: %w", id, context.Cause(ctx))
		}
		backoff = min(2*backoff, followMaxBackoff)
	}
}

type follower struct {
	st         *store.Store
	pool       *pgxpool.Pool
	id         uuid.UUID
	last       int64
	emit       func(store.LogLine) error
	readOnce   bool // a read succeeded: later errors are outages, not misconfiguration
	progressed bool // this session read something: reset the reconnect backoff
}

// session holds one LISTEN connection: it listens first and reads second,
// so no line committed in between is missed, then reads after each wake-up.
func (f *follower) session(ctx context.Context) (store.Status, error) {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("acquiring a connection to listen on: %w", err)
	}
	// A LISTENing connection must not go back to the pool: close it.
	defer func() {
		pc := conn.Hijack()
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = pc.Close(closeCtx)
	}()
	for _, ch := range []string{"grape_logs"} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return "", fmt.Errorf("listening on %s: %w", ch, err)
		}
	}
	idPrefix := f.id.String() + ":"
	for {
		if err := f.readLines(ctx); err != nil {
			return "", err
		}
		d, err := f.st.GetDeployment(ctx, f.id)
		if err != nil {
			return "", err
		}
		f.readOnce = true
		if d.Status.Final() {
			// The agent commits every line before the final status: one more
			// read after seeing it gets them all.
			if err := f.readLines(ctx); err != nil {
				return "", err
			}
			return d.Status, nil
		}
		// Wait for news about this deployment, or the poll interval.
		waitCtx, cancel := context.WithTimeout(ctx, followPoll)
		for {
			n, err := conn.Conn().WaitForNotification(waitCtx)
			if err != nil {
				cancel()
				if ctx.Err() != nil {
					return "", ctx.Err()
				}
				if waitCtx.Err() != nil && !conn.Conn().IsClosed() {
					break // poll
				}
				return "", fmt.Errorf("waiting for log notifications: %w", err)
			}
			payload, ok := strings.CutPrefix(n.Payload, idPrefix)
			if !ok {
				continue // another deployment
			}
			if n.Channel == "grape_logs" {
				if seq, err := strconv.ParseInt(payload, 10, 64); err == nil && seq <= f.last {
					continue // lines we already have
				}
			}
			cancel()
			break
		}
	}
}

// readLines emits every stored line after f.last, page by page.
func (f *follower) readLines(ctx context.Context) error {
	for {
		lines, err := f.st.ReadLogs(ctx, f.id, f.last, followPage)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if err := f.emit(l); err != nil {
				return emitError{err}
			}
			f.last = l.Seq
			f.progressed = true
		}
		if len(lines) < followPage {
			return nil
		}
	}
}
