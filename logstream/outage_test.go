package logstream_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

// The real faults: `pg_ctl restart -m fast`, then the server stopped for 20 s,
// while a child prints 1,000 lines/s. Nothing may be lost or doubled, the
// child's pipe must not stall, no secret may reach the spill file, Close
// returns only when the last line is stored, and a follower started before
// the run sees every line once and the final status. The package's only
// slow test (~30 s).
func TestPostgresRestartAndOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: stops PostgreSQL for 20 s")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := testsupport.StartPostgres(t)
	url := testsupport.MigratedDatabaseOn(t, pg)
	pool := testsupport.Pool(t, url)
	d := queueDeployment(t, ctx, store.New(pool))

	follower := startFollow(t, ctx, testsupport.Pool(t, url), d.ID, 0)
	dir := t.TempDir()
	s, err := logstream.Open(ctx, pool, d.ID, logstream.Options{SpillDir: dir, MemoryLines: 2000, Redactor: redact.New(0, canarySecret)})
	require.NoError(t, err)
	stdout := &timedWriter{w: s.Writer(store.StreamStdout)}
	const rate, n = 1000, 25_000
	childDone := make(chan error, 1)
	go func() {
		childDone <- runChildWith(ctx, stdout, s.Writer(store.StreamStderr), "steady", append(childEnvFor(n, rate), canaryEnv+"="+canarySecret)...)
	}()

	time.Sleep(time.Second)
	require.NoError(t, pg.Restart(ctx))
	t.Logf("restarted PostgreSQL at line ~%d", s.Stats().Lines)
	time.Sleep(time.Second)
	require.NoError(t, pg.Stop(ctx))
	t.Logf("stopped PostgreSQL at line ~%d", s.Stats().Lines)
	time.Sleep(10 * time.Second)
	spilled, err := os.ReadFile(logstream.SpillPath(dir, d.ID))
	require.NoError(t, err, "10 s into the outage lines must be in the spill file")
	require.Greater(t, len(spilled), 1000*lineWidth)
	requireNoSecret(t, string(spilled), canarySecret)
	time.Sleep(10 * time.Second)
	require.NoError(t, pg.Start(ctx))
	t.Logf("started PostgreSQL at line ~%d, %d buffered", s.Stats().Lines, s.Stats().Buffered)

	require.NoError(t, <-childDone)
	require.NoError(t, s.Close(ctx))
	got := rows(t, ctx, pool, d.ID) // right after Close: everything must be there
	require.Len(t, got, n)
	requireGapless(t, got, 1)
	for i, l := range got {
		want := childLine("out", i+1)
		if (i+1)%500 == 0 {
			want = fmt.Sprintf("out %08d canary=***", i+1)
		}
		require.Equal(t, want, l.Line)
	}
	st := s.Stats()
	t.Logf("stats: %+v; longest write %v", st, time.Duration(stdout.longest.Load()))
	require.Positive(t, st.Retries)
	require.Positive(t, st.Spilled)
	// Loose for a loaded machine under -race: a pipe that waited on the
	// database would stall for the whole 20 s outage.
	require.Less(t, time.Duration(stdout.longest.Load()), time.Second, "the child's pipe stalled")

	finish(t, ctx, pool, d.ID, store.StatusSucceeded)
	requireFollowed(t, <-follower, got, 0, store.StatusSucceeded)
}
