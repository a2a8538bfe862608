package logstream_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

type followResult struct {
	status store.Status
	lines  []store.LogLine
	err    error
}

// notifierOn is a notifier on pool's database, as a `grape logs --follow`
// process has one.
func notifierOn(t *testing.T, pool *pgxpool.Pool) *notify.Notifier {
	t.Helper()
	n, err := notify.New(pool.Config().ConnString(), notify.Options{Name: "grape-follow-test"})
	require.NoError(t, err)
	return n
}

// startFollow runs Follow in the background and delivers what it emitted.
func startFollow(t *testing.T, ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, after int64) <-chan followResult {
	t.Helper()
	st, n := store.New(pool), notifierOn(t, pool)
	ch := make(chan followResult, 1)
	go func() {
		var got []store.LogLine
		status, err := logstream.Follow(ctx, st, n, id, after, func(l store.LogLine) error {
			got = append(got, l)
			return nil
		})
		ch <- followResult{status, got, err}
	}()
	return ch
}

// requireFollowed checks a follower printed exactly the stored lines after
// `after`, each once, in order, and returned the final status.
func requireFollowed(t *testing.T, res followResult, stored []store.LogLine, after int64, want store.Status) {
	t.Helper()
	require.NoError(t, res.err)
	require.Equal(t, want, res.status)
	requireGapless(t, res.lines, after+1)
	require.Equal(t, texts(stored[after:]), texts(res.lines))
}

func TestFollowBeforeAndDuringTheRun(t *testing.T) {
	b := setup(t)
	d := b.deployment(t)
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()

	before := startFollow(t, ctx, b.pool, d.ID, 0)
	s, err := logstream.Open(ctx, b.pool, d.ID, logstream.Options{BatchLines: 100})
	require.NoError(t, err)
	s.Agentf("phase: init")
	const n = 6000
	childDone := make(chan error, 1)
	go func() { childDone <- runChild(ctx, s, "interleaved", childEnvFor(n, 6000)...) }()

	require.Eventually(t, func() bool { return s.Stats().Durable >= 1500 }, 30*time.Second, 5*time.Millisecond)
	midRun := startFollow(t, ctx, b.pool, d.ID, 0)
	midRunAfter := startFollow(t, ctx, b.pool, d.ID, 1000)

	require.NoError(t, <-childDone)
	s.Agentf("phase: done")
	require.NoError(t, s.Close(ctx))
	select {
	case res := <-before:
		t.Fatalf("follower returned before the final status: %+v", res.err)
	case <-time.After(200 * time.Millisecond):
	}
	finish(t, ctx, b.pool, d.ID, store.StatusFailed)

	stored := rows(t, ctx, b.pool, d.ID)
	require.Len(t, stored, n+2)
	requireFollowed(t, <-before, stored, 0, store.StatusFailed)
	requireFollowed(t, <-midRun, stored, 0, store.StatusFailed)
	requireFollowed(t, <-midRunAfter, stored, 1000, store.StatusFailed)
}

func TestFollowFinishedDeployment(t *testing.T) {
	b := setup(t)
	d := b.deployment(t)
	s, err := logstream.Open(b.ctx, b.pool, d.ID, logstream.Options{})
	require.NoError(t, err)
	s.Agentf("one\ntwo\nthree")
	require.NoError(t, s.Close(b.ctx))
	finish(t, b.ctx, b.pool, d.ID, store.StatusSucceeded)
	stored := rows(t, b.ctx, b.pool, d.ID)
	require.Equal(t, []string{"one", "two", "three"}, texts(stored))

	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	requireFollowed(t, <-startFollow(t, ctx, b.pool, d.ID, 0), stored, 0, store.StatusSucceeded)
	requireFollowed(t, <-startFollow(t, ctx, b.pool, d.ID, 2), stored, 2, store.StatusSucceeded)

	_, err = logstream.Follow(ctx, b.st, notifierOn(t, b.pool), uuid.New(), 0, func(store.LogLine) error { return nil })
	require.ErrorIs(t, err, store.ErrNotFound)

	stop := errors.New("stdout closed")
	calls := 0
	_, err = logstream.Follow(ctx, b.st, notifierOn(t, b.pool), d.ID, 0, func(store.LogLine) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
}

// A follower gives up with its context, not before.
func TestFollowEndsWithItsContext(t *testing.T) {
	b := setup(t)
	d := b.deployment(t)
	ctx, cancel := context.WithTimeout(b.ctx, 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := logstream.Follow(ctx, b.st, notifierOn(t, b.pool), d.ID, 0, func(store.LogLine) error { return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 1400*time.Millisecond)
}

// Not parallel, so nothing else runs: after Close and Follow return (and the
// test's pool is closed), no goroutine of theirs may be left.
func TestNoGoroutineOutlivesCloseAndFollow(t *testing.T) {
	before := goleak.IgnoreCurrent() // what runs now: the shared test server's helpers
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	ctx := context.Background()
	pool := testsupport.DB(t)
	d := queueDeployment(t, ctx, store.New(pool))
	follower := startFollow(t, ctx, pool, d.ID, 0)
	s, err := logstream.Open(ctx, pool, d.ID, logstream.Options{SpillDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, runChild(ctx, s, "interleaved", childEnvFor(1000, 0)...))
	require.NoError(t, s.Close(ctx))
	finish(t, ctx, pool, d.ID, store.StatusCancelled)
	res := <-follower
	require.NoError(t, res.err)
	require.Equal(t, store.StatusCancelled, res.status)
	require.Len(t, res.lines, 1000)
}
