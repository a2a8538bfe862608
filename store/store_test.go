package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

type bundle struct {
	st   *store.Store
	pool *pgxpool.Pool // for what a front end would do directly
	ctx  context.Context
}

func setup(t *testing.T) bundle {
	t.Helper()
	t.Parallel()
	pool := testsupport.DB(t)
	return bundle{st: store.New(pool), pool: pool, ctx: context.Background()}
}

func (b bundle) config(t *testing.T, cluster, name string) store.Config {
	t.Helper()
	_, err := b.st.CreateCluster(b.ctx, cluster, "")
	require.NoError(t, err)
	c, err := b.st.UpsertConfig(b.ctx, cluster, name, json.RawMessage(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	return c
}

func TestConfigVersionBumpsOnlyOnChange(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	require.Equal(t, 1, c.Version)

	same, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", json.RawMessage(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	require.Equal(t, 1, same.Version, "identical spec must not bump the version")

	changed, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", json.RawMessage(`{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	require.Equal(t, 2, changed.Version)
	require.Equal(t, c.ID, changed.ID)

	hist, err := b.st.ConfigHistory(b.ctx, c.ID)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, 2, hist[0].Version)
}

func TestUnknownClusterIsRefused(t *testing.T) {
	b := setup(t)
	_, err := b.st.UpsertConfig(b.ctx, "nope", "prod", json.RawMessage(`{}`), store.ConfigSettings{})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, "grape cluster create nope")
}

func TestEnqueueRejectsBadRows(t *testing.T) {
	b := setup(t)
	a := b.config(t, "a", "prod")
	b.config(t, "b", "prod")

	_, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "b", ConfigID: a.ID})
	require.ErrorIs(t, err, store.ErrNotFound, "a config of another cluster must be refused")

	_, err = b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "a", ConfigID: a.ID, Action: "explode"})
	require.ErrorIs(t, err, store.ErrInvalid)

	// A front end inserting directly gets the database's refusal too.
	_, err = b.pool.Exec(b.ctx, `INSERT INTO deployments (config_id, cluster_id, status) VALUES ($1, 'a', 'succeeded')`, a.ID)
	require.ErrorContains(t, err, "a new deployment must be queued")
}

func TestClaimOrderAndPerConfigSerialisation(t *testing.T) {
	b := setup(t)
	a := b.config(t, "c1", "a")
	bb, err := b.st.UpsertConfig(b.ctx, "c1", "b", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)

	a1, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "c1", ConfigID: a.ID})
	require.NoError(t, err)
	a2, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "c1", ConfigID: a.ID})
	require.NoError(t, err)
	b1, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "c1", ConfigID: bb.ID})
	require.NoError(t, err)

	got, err := b.st.Claim(b.ctx, "c1", "agent-1", time.Minute)
	require.NoError(t, err)
	require.Equal(t, a1.ID, got.ID, "oldest first")
	require.Equal(t, 1, got.Attempt)

	got, err = b.st.Claim(b.ctx, "c1", "agent-2", time.Minute)
	require.NoError(t, err)
	require.Equal(t, b1.ID, got.ID, "a2 must wait for a1: same config")

	_, err = b.st.Claim(b.ctx, "c1", "agent-2", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)

	require.NoError(t, b.st.Finish(b.ctx, a1.ID, "agent-1", store.Outcome{Status: store.StatusSucceeded}))
	got, err = b.st.Claim(b.ctx, "c1", "agent-2", time.Minute)
	require.NoError(t, err)
	require.Equal(t, a2.ID, got.ID)

	// Another cluster's agent sees nothing.
	_, err = b.st.Claim(b.ctx, "other", "agent-9", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestConcurrentClaimsNeverDouble(t *testing.T) {
	b := setup(t)
	const configs, perConfig, agents = 10, 20, 8
	var ids []uuid.UUID
	_, err := b.st.CreateCluster(b.ctx, "race", "")
	require.NoError(t, err)
	for i := 0; i < configs; i++ {
		c, err := b.st.UpsertConfig(b.ctx, "race", "cfg"+string(rune('a'+i)), json.RawMessage(`{}`), store.ConfigSettings{})
		require.NoError(t, err)
		for j := 0; j < perConfig; j++ {
			d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "race", ConfigID: c.ID})
			require.NoError(t, err)
			ids = append(ids, d.ID)
		}
	}
	var mu sync.Mutex
	claims := map[uuid.UUID]int{}
	running := map[uuid.UUID]bool{} // config -> running
	var overlap error
	var wg sync.WaitGroup
	for a := 0; a < agents; a++ {
		wg.Add(1)
		go func(agent string) {
			defer wg.Done()
			for {
				d, err := b.st.Claim(b.ctx, "race", agent, time.Minute)
				if errors.Is(err, store.ErrNotFound) {
					mu.Lock()
					done := len(claims) == len(ids)
					mu.Unlock()
					if done {
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					mu.Lock()
					overlap = err
					mu.Unlock()
					return
				}
				mu.Lock()
				claims[d.ID]++
				if running[d.ConfigID] {
					overlap = errors.New("two runs of one config at once")
				}
				running[d.ConfigID] = true
				mu.Unlock()
				time.Sleep(200 * time.Microsecond)
				mu.Lock()
				running[d.ConfigID] = false
				mu.Unlock()
				if err := b.st.Finish(b.ctx, d.ID, agent, store.Outcome{Status: store.StatusSucceeded}); err != nil {
					mu.Lock()
					overlap = err
					mu.Unlock()
					return
				}
			}
		}(string(rune('A' + a)))
	}
	wg.Wait()
	require.NoError(t, overlap)
	require.Len(t, claims, len(ids))
	for id, n := range claims {
		require.Equal(t, 1, n, "deployment %s claimed %d times", id, n)
	}
}

func TestRescueDecision(t *testing.T) {
	agent := "agent-x"
	phase := func(p store.Phase) *store.Phase { return &p }
	now := time.Now()
	cases := []struct {
		name    string
		d       store.Deployment
		requeue bool
		status  store.Status
		msg     string
	}{
		{"lost during plan is requeued", store.Deployment{Action: store.ActionApply, Phase: phase(store.PhasePlan), Attempt: 1, MaxAttempts: 3, ClaimedBy: &agent}, true, "", "agent agent-x lost during plan on attempt 1 of 3; requeued"},
		{"lost during init on last attempt fails", store.Deployment{Action: store.ActionApply, Phase: phase(store.PhaseInit), Attempt: 3, MaxAttempts: 3, ClaimedBy: &agent}, false, store.StatusFailed, "agent agent-x lost during init on attempt 3 of 3; no attempts left"},
		{"lost during apply fails", store.Deployment{Action: store.ActionApply, Phase: phase(store.PhaseApply), Attempt: 1, MaxAttempts: 3, ClaimedBy: &agent}, false, store.StatusFailed, "agent agent-x lost during apply: infrastructure may be partly changed; check the state (and any state lock it left) before deploying again"},
		{"lost reading outputs fails, saying the apply completed", store.Deployment{Action: store.ActionDestroy, Phase: phase(store.PhaseOutputs), Attempt: 1, MaxAttempts: 3, ClaimedBy: &agent}, false, store.StatusFailed, "agent agent-x lost during outputs, after the apply completed: the infrastructure is as planned, but the deployment's outputs were not recorded; deploy again to record them"},
		{"cancel requested is not retried", store.Deployment{Action: store.ActionApply, Phase: phase(store.PhasePlan), Attempt: 1, MaxAttempts: 3, ClaimedBy: &agent, CancelRequestedAt: &now}, false, store.StatusCancelled, "agent agent-x lost during plan; cancel was requested, so it is not retried"},
		{"drift check is not requeued", store.Deployment{Action: store.ActionDrift, Phase: phase(store.PhasePlan), Attempt: 1, MaxAttempts: 3, ClaimedBy: &agent}, false, store.StatusFailed, "agent agent-x lost during drift check (plan)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dec := store.DecideRescue(tc.d)
			require.Equal(t, tc.requeue, dec.Requeue)
			require.Equal(t, tc.msg, dec.Note)
			if !tc.requeue {
				require.Equal(t, tc.status, dec.Outcome.Status)
				require.Equal(t, tc.msg, dec.Outcome.Error)
			}
		})
	}
}

func TestMigrationsTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	url := testsupport.EmptyDatabaseURL(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	applied := make([][]int, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			pool := testsupport.Pool(t, url)
			applied[i], errs[i] = store.Migrate(ctx, pool)
		}(i)
	}
	wg.Wait()
	total := 0
	for i, err := range errs {
		require.NoError(t, err, "migrator %d", i)
		total += len(applied[i])
	}
	migs, err := store.Migrations()
	require.NoError(t, err)
	require.Equal(t, len(migs), total, "each migration applied exactly once across concurrent migrators")

	again, err := store.Migrate(ctx, testsupport.Pool(t, url))
	require.NoError(t, err)
	require.Empty(t, again)
}

// TestSupabaseRealtimePublication: on a Supabase database (the
// supabase_realtime publication exists) the migrations publish deployments
// and their log lines; on plain PostgreSQL they skip that (every other test).
func TestSupabaseRealtimePublication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.Pool(t, testsupport.EmptyDatabaseURL(t))
	_, err := pool.Exec(ctx, `CREATE PUBLICATION supabase_realtime`)
	require.NoError(t, err)
	_, err = store.Migrate(ctx, pool)
	require.NoError(t, err)
	rows, err := pool.Query(ctx, `SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' ORDER BY 1`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		tables = append(tables, s)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"deployment_logs", "deployments"}, tables)
}
