package logstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
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
	// followMaxBackoff caps the wait between reads while the database is away.
	followMaxBackoff = 3 * time.Second
)

// emitError marks an error returned by the caller's emit function.
type emitError struct{ err error }

func (e emitError) Error() string { return e.err.Error() }
func (e emitError) Unwrap() error { return e.err }

// Follow calls emit for every line of deployment id after afterSeq, once and
// in seq order, live, until the deployment has a final status and every line
// is read; it returns that status. It wakes on the deployment's grape_logs
// notifications (through n, the process's notifier), re-reads the status
// every 250 ms (status changes are not notified), and survives a database
// restart: reads are retried, and the notifier reconnects and says so.
// Errors before the first successful read (a wrong URL, an unknown
// deployment: store.ErrNotFound) and errors from emit are returned at once;
// later ones are retried until ctx ends.
//
// Every line is there once the status is final because the agent closes its
// log stream (all lines committed) before it writes the final status.
func Follow(ctx context.Context, st *store.Store, n *notify.Notifier, id uuid.UUID, afterSeq int64, emit func(store.LogLine) error) (store.Status, error) {
	// Subscribe before the first read, so no batch committed after it goes
	// unannounced. Only "there is more" matters: one pending wake-up will do.
	sub := notify.Subscribe(n, notify.LogsOf(id), 1)
	defer sub.Close()
	f := &follower{st: st, id: id, last: afterSeq, emit: emit}
	retry := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: followMaxBackoff, Jitter: 0.5})
	for {
		status, err := f.step(ctx)
		var ee emitError
		switch {
		case err == nil && status.Final():
			return status, nil
		case err == nil:
			retry.Reset()
			if err := f.wait(ctx, sub); err != nil {
				return "", fmt.Errorf("following logs of deployment %s: %w", id, err)
			}
		case errors.As(err, &ee):
			return "", ee.err
		case ctx.Err() != nil:
			return "", fmt.Errorf("following logs of deployment %s: %w", id, context.Cause(ctx))
		case errors.Is(err, store.ErrNotFound), !f.readOnce:
			return "", fmt.Errorf("following logs of deployment %s: %w", id, err)
		default:
			// The database is away: try again; the notifier reconnects on its own.
			if err := retry.Wait(ctx); err != nil {
				return "", fmt.Errorf("following logs of deployment %s: %w", id, err)
			}
		}
	}
}

type follower struct {
	st       *store.Store
	id       uuid.UUID
	last     int64
	emit     func(store.LogLine) error
	readOnce bool // a read succeeded: later errors are outages, not misconfiguration
}

// step emits the lines stored since the last step and returns the status.
func (f *follower) step(ctx context.Context) (store.Status, error) {
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
	}
	return d.Status, nil
}

// wait returns when there may be news: lines we do not have yet were
// announced, notifications may have been missed, or the poll interval passed.
func (f *follower) wait(ctx context.Context, sub *notify.Subscription[notify.LogBatch]) error {
	poll := time.NewTimer(followPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case b := <-sub.C:
			if b.LastSeq > f.last {
				return nil
			} // else: lines we already have
		case <-sub.Resync:
			return nil
		case <-poll.C:
			return nil
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
		}
		if len(lines) < followPage {
			return nil
		}
	}
}
