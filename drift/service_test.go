package drift_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// finishAs runs an apply through the queue to the given outcome, as an
// agent would, and backdates it so a check is due.
func finishAs(t *testing.T, pool *pgxpool.Pool, c store.Config, status store.Status, commit string, ago time.Duration) {
	t.Helper()
	ctx := context.Background()
	st := store.New(pool)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: store.ActionApply})
	require.NoError(t, err)
	got, err := st.ClaimByID(ctx, d.ID, "agent", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.SetCommit(ctx, got.ID, "agent", commit))
	o := store.Outcome{Status: status}
	if status != store.StatusSucceeded {
		o.Kind, o.Error = store.KindApply, "boom"
	}
	require.NoError(t, st.Finish(ctx, got.ID, "agent", o))
	_, err = pool.Exec(ctx, `UPDATE deployments SET finished_at = now() - make_interval(secs => $2) WHERE id = $1`, d.ID, ago.Seconds())
	require.NoError(t, err)
}

func TestPassQueuesOnlyIdleDueConfigsWithinConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.DB(t)
	st := store.New(pool)
	_, err := st.CreateCluster(ctx, "eu-1", "")
	require.NoError(t, err)
	cfg := func(name string) store.Config {
		c, err := st.UpsertConfig(ctx, "eu-1", name, json.RawMessage(`{}`), store.ConfigSettings{})
		require.NoError(t, err)
		return c
	}
	commit := func(i int) string { return fmt.Sprintf("%040x", i) }

	idle := []store.Config{cfg("idle-a"), cfg("idle-b"), cfg("idle-c")}
	for i, c := range idle {
		finishAs(t, pool, c, store.StatusSucceeded, commit(i), 7*time.Hour)
	}
	failed := cfg("failed")
	finishAs(t, pool, failed, store.StatusSucceeded, commit(10), 9*time.Hour)
	finishAs(t, pool, failed, store.StatusFailed, commit(11), 7*time.Hour)
	fresh := cfg("fresh")
	finishAs(t, pool, fresh, store.StatusSucceeded, commit(20), time.Minute)
	busy := cfg("busy")
	finishAs(t, pool, busy, store.StatusSucceeded, commit(30), 7*time.Hour)
	_, err = st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: busy.ID, Action: store.ActionApply})
	require.NoError(t, err)
	cfg("never")

	def, err := drift.ParseSchedule("@every 6h")
	require.NoError(t, err)
	svc := &drift.Service{Store: st, Cluster: "eu-1", Default: def, Concurrency: 2}
	first, err := svc.Pass(ctx)
	require.NoError(t, err)
	require.Len(t, first, 2, "concurrency 2: two checks at a time")
	for _, d := range first {
		require.Equal(t, store.ActionDrift, d.Action)
		require.NotNil(t, d.SourceCommit)
	}
	again, err := svc.Pass(ctx)
	require.NoError(t, err)
	require.Empty(t, again, "the limit holds across passes; nothing is queued twice")

	// Finish the two checks as an agent would: the third idle config is next.
	for _, d := range first {
		got, err := st.ClaimByID(ctx, d.ID, "agent", time.Minute)
		require.NoError(t, err)
		_, err = st.InsertDriftReport(ctx, store.DriftReport{ConfigID: got.ConfigID, ClusterID: "eu-1", DeploymentID: &got.ID, Status: store.DriftInSync, CommitSHA: got.SourceCommit})
		require.NoError(t, err)
		require.NoError(t, st.Finish(ctx, got.ID, "agent", store.Outcome{Status: store.StatusSucceeded}))
	}
	third, err := svc.Pass(ctx)
	require.NoError(t, err)
	require.Len(t, third, 1)
	names := map[string]bool{}
	for _, d := range append(first, third...) {
		c, err := st.GetConfigByID(ctx, d.ConfigID)
		require.NoError(t, err)
		names[c.Name] = true
	}
	require.Equal(t, map[string]bool{"idle-a": true, "idle-b": true, "idle-c": true}, names,
		"failed, freshly applied, busy and never-applied configs are skipped")

	// A check that errored does not block the next one once it is due.
	got, err := st.ClaimByID(ctx, third[0].ID, "agent", time.Minute)
	require.NoError(t, err)
	msg := "state backend unreachable"
	_, err = st.InsertDriftReport(ctx, store.DriftReport{ConfigID: got.ConfigID, ClusterID: "eu-1", DeploymentID: &got.ID, Status: store.DriftError, Error: &msg})
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, got.ID, "agent", store.Outcome{Status: store.StatusFailed, Kind: store.KindInit, Error: msg}))
	later := &drift.Service{Store: st, Cluster: "eu-1", Default: def, Concurrency: 5, Now: func() time.Time { return time.Now().Add(7 * time.Hour) }}
	next, err := later.Pass(ctx)
	require.NoError(t, err)
	require.Len(t, next, 4, "all three idle configs again, and fresh is due by then too")
}

func TestOnlyOneAgentRunsAPass(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.DB(t)
	st := store.New(pool)
	_, err := st.CreateCluster(ctx, "eu-1", "")
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		c, err := st.UpsertConfig(ctx, "eu-1", fmt.Sprintf("c%d", i), json.RawMessage(`{}`), store.ConfigSettings{})
		require.NoError(t, err)
		finishAs(t, pool, c, store.StatusSucceeded, fmt.Sprintf("%040x", i), 7*time.Hour)
	}
	def, err := drift.ParseSchedule("@every 6h")
	require.NoError(t, err)
	// The passes report back to the test goroutine, which alone may fail
	// the test: a require in a pass's goroutine would hang the suite.
	type result struct {
		queued int
		err    error
	}
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		go func() {
			svc := &drift.Service{Store: st, Cluster: "eu-1", Default: def, Concurrency: 10}
			q, err := svc.Pass(ctx)
			results <- result{len(q), err}
		}()
	}
	total := 0
	for i := 0; i < 4; i++ {
		r := <-results
		require.NoError(t, r.err)
		total += r.queued
	}
	require.Equal(t, 5, total, "four agents racing a pass queue each check once")
}
