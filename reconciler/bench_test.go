package reconciler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

// claimObserver records when each deployment was claimed.
type claimObserver struct {
	mu      sync.Mutex
	claimed map[uuid.UUID]time.Time
	counts  map[uuid.UUID]int
}

func newClaimObserver() *claimObserver {
	return &claimObserver{claimed: map[uuid.UUID]time.Time{}, counts: map[uuid.UUID]int{}}
}

func (o *claimObserver) Claimed(d store.Deployment) {
	o.mu.Lock()
	o.claimed[d.ID] = time.Now()
	o.counts[d.ID]++
	o.mu.Unlock()
}
func (o *claimObserver) PhaseDone(store.Deployment, store.Phase, time.Duration)  {}
func (o *claimObserver) Finished(store.Deployment, store.Outcome, time.Duration) {}
func (o *claimObserver) Rescued(store.Rescued)                                   {}

func (o *claimObserver) at(id uuid.UUID) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.claimed[id]
	return t, ok
}

type benchDB struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	st   *store.Store
}

// durableDB is a fresh fsync=on server: pickup latency includes real commits.
func durableDB(b *testing.B) benchDB {
	pg := testsupport.StartDurablePostgres(b)
	url := testsupport.MigratedDatabaseOn(b, pg)
	pool := testsupport.Pool(b, url)
	return benchDB{ctx: context.Background(), url: url, pool: pool, st: store.New(pool)}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

// BenchmarkPickupLatency: INSERT of a queued deployment → claimed in_progress,
// over 200 deployments inserted at random intervals (so each is measured on
// its own, not queued behind another).
func BenchmarkPickupLatency(b *testing.B) {
	for _, mode := range []struct {
		name     string
		pollOnly bool
		poll     time.Duration
	}{
		{"notify", false, time.Second},
		{"poll-only-1s", true, time.Second},
	} {
		b.Run(mode.name, func(b *testing.B) {
			db := durableDB(b)
			_, err := db.st.CreateCluster(db.ctx, "bench", "")
			require.NoError(b, err)
			const n = 200
			var cfgs []store.Config
			for i := 0; i < 20; i++ {
				c, err := db.st.UpsertConfig(db.ctx, "bench", fmt.Sprintf("c%d", i), json.RawMessage(`{}`), store.ConfigSettings{})
				require.NoError(b, err)
				cfgs = append(cfgs, c)
			}
			obs := newClaimObserver()
			a, err := reconciler.New(db.st, db.url, reconciler.WorkFunc(succeed), reconciler.Options{
				ClusterID: "bench", AgentID: "bench", Concurrency: 8, PollOnly: mode.pollOnly, PollInterval: mode.poll, Observer: obs,
			})
			require.NoError(b, err)
			ctx, cancel := context.WithCancel(db.ctx)
			done := make(chan error)
			go func() { done <- a.Run(ctx) }()
			if !mode.pollOnly {
				for !a.Listening() {
					time.Sleep(5 * time.Millisecond)
				}
			}
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				var lat []time.Duration
				var wg sync.WaitGroup
				for i := 0; i < n; i++ {
					time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
					t0 := time.Now()
					d, err := db.st.Enqueue(db.ctx, store.EnqueueParams{ClusterID: "bench", ConfigID: cfgs[i%len(cfgs)].ID})
					require.NoError(b, err)
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							if t1, ok := obs.at(d.ID); ok {
								obs.mu.Lock()
								lat = append(lat, t1.Sub(t0))
								obs.mu.Unlock()
								return
							}
							time.Sleep(200 * time.Microsecond)
						}
					}()
				}
				wg.Wait()
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(len(lat)), "deployments")
			}
			b.StopTimer()
			cancel()
			require.NoError(b, <-done)
		})
	}
}

// BenchmarkClaimThroughput: 8 agent loops drain 2,000 no-op deployments over
// 50 configs, next to the raw FOR UPDATE SKIP LOCKED claim rate measured on
// the same server in the same run.
func BenchmarkClaimThroughput(b *testing.B) {
	db := durableDB(b)
	const total, configs, agents = 2000, 50, 8
	for it := 0; it < b.N; it++ {
		raw := rawSkipLocked(b, db.pool, total, agents)

		cluster := fmt.Sprintf("tp%d", it)
		_, err := db.st.CreateCluster(db.ctx, cluster, "")
		require.NoError(b, err)
		var cfgIDs []uuid.UUID
		for i := 0; i < configs; i++ {
			c, err := db.st.UpsertConfig(db.ctx, cluster, fmt.Sprintf("c%d", i), json.RawMessage(`{}`), store.ConfigSettings{})
			require.NoError(b, err)
			cfgIDs = append(cfgIDs, c.ID)
		}
		// Queue everything in one statement: the benchmark measures claiming.
		_, err = db.pool.Exec(db.ctx, `INSERT INTO deployments (config_id, cluster_id)
SELECT ($1::uuid[])[1 + (g % $2)], $3 FROM generate_series(0, $4 - 1) g`, cfgIDs, configs, cluster, total)
		require.NoError(b, err)

		obs := newClaimObserver()
		ctx, cancel := context.WithCancel(db.ctx)
		var wg sync.WaitGroup
		t0 := time.Now()
		for a := 0; a < agents; a++ {
			ag, err := reconciler.New(db.st, db.url, reconciler.WorkFunc(succeed), reconciler.Options{
				ClusterID: cluster, AgentID: fmt.Sprintf("a%d", a), PollInterval: 20 * time.Millisecond, Observer: obs,
			})
			require.NoError(b, err)
			wg.Add(1)
			go func() { defer wg.Done(); _ = ag.Run(ctx) }()
		}
		for {
			var left int
			require.NoError(b, db.pool.QueryRow(db.ctx, `SELECT count(*) FROM deployments WHERE cluster_id = $1 AND status <> 'succeeded'`, cluster).Scan(&left))
			if left == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(t0)
		cancel()
		wg.Wait()
		doubles := 0
		for _, n := range obs.counts {
			if n > 1 {
				doubles++
			}
		}
		require.Len(b, obs.counts, total)
		ours := float64(total) / elapsed.Seconds()
		b.ReportMetric(ours, "claims/s")
		b.ReportMetric(raw, "raw-claims/s")
		b.ReportMetric(ours/raw, "ratio")
		b.ReportMetric(float64(doubles), "double-claims")
	}
}

// rawSkipLocked is the ceiling: a bare claim statement on a one-column queue.
func rawSkipLocked(b *testing.B, pool *pgxpool.Pool, total, workers int) float64 {
	ctx := context.Background()
	for _, sql := range []string{`DROP TABLE IF EXISTS raw_jobs`, `CREATE TABLE raw_jobs (id bigint PRIMARY KEY, status text NOT NULL)`} {
		_, err := pool.Exec(ctx, sql)
		require.NoError(b, err)
	}
	_, err := pool.Exec(ctx, `INSERT INTO raw_jobs SELECT g, 'queued' FROM generate_series(1, $1) g`, total)
	require.NoError(b, err)
	var claimed sync.Map
	var wg sync.WaitGroup
	// Workers report a failed claim here; the benchmark goroutine fails on
	// it (FailNow must not be called from another goroutine).
	errs := make(chan error, workers)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var id int64
				err := pool.QueryRow(ctx, `WITH c AS (SELECT id FROM raw_jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE raw_jobs j SET status = 'done' FROM c WHERE j.id = c.id RETURNING j.id`).Scan(&id)
				if errors.Is(err, pgx.ErrNoRows) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("raw claim: %w", err)
					return
				}
				if _, dup := claimed.LoadOrStore(id, true); dup {
					b.Errorf("raw job %d claimed twice", id)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	return float64(total) / elapsed.Seconds()
}
