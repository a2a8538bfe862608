package store_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// BenchmarkPruneWhileAppending prunes the logs of finished deployments
// (5,000,000 lines of 80 bytes by default; GRAPE_BENCH_PRUNE_LINES changes
// it) on a durable (fsync on) server while a running deployment receives
// ~1,000 lines/s in batches of 50, as an agent's log pipeline sends them. It
// reports the append latency p99 while the prune runs against the p99 of the
// same appender just before it (same run, same server), the prune's rate, and
// checks that no line of the running deployment went. Target: p99 ratio ≤ 1.5.
// One op is one whole measurement; run with -benchtime 1x.
func BenchmarkPruneWhileAppending(b *testing.B) {
	total := 5_000_000
	if v := os.Getenv("GRAPE_BENCH_PRUNE_LINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("GRAPE_BENCH_PRUNE_LINES=%q: want a number of lines >= 1000", v)
		}
		total = n
	}
	const perDeployment = 5000
	ctx := context.Background()
	pg := testsupport.StartDurablePostgres(b)
	pool := testsupport.Pool(b, testsupport.MigratedDatabaseOn(b, pg))
	st := store.New(pool)
	if _, err := st.CreateCluster(ctx, "bench", ""); err != nil {
		b.Fatal(err)
	}
	cfg, err := st.UpsertConfig(ctx, "bench", "prod", []byte(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		// Old finished deployments and their lines, written by SQL: the
		// seed is not what is measured.
		deployments := total / perDeployment
		seedStart := time.Now()
		if _, err := pool.Exec(ctx, `INSERT INTO deployments (config_id, cluster_id, action)
SELECT $1, 'bench', 'plan' FROM generate_series(1, $2)`, cfg.ID, deployments); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE deployments SET status = 'succeeded', finished_at = now() - interval '90 days'
WHERE status = 'queued'`); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO deployment_logs (deployment_id, seq, stream, line)
SELECT d.id, g, 'stdout', repeat('x', 80) FROM deployments d, generate_series(1, $1) g WHERE d.finished_at IS NOT NULL AND d.logs_pruned_at IS NULL`, perDeployment); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `VACUUM ANALYZE deployment_logs`); err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded %d lines in %d deployments in %s", total, deployments, time.Since(seedStart).Round(time.Second))

		d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "bench", ConfigID: cfg.ID})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.ClaimByID(ctx, d.ID, "agent-1", time.Hour); err != nil {
			b.Fatal(err)
		}
		ap := &appender{st: st, id: d.ID}
		base, err := ap.run(ctx, 20*time.Second, nil)
		if err != nil {
			b.Fatal(err)
		}

		done := make(chan struct{})
		var res store.PruneResult
		var pruneErr error
		var pruneTime time.Duration
		go func() {
			defer close(done)
			start := time.Now()
			res, pruneErr = st.Prune(ctx, store.PruneOptions{LogsBefore: time.Now().Add(-30 * 24 * time.Hour)})
			pruneTime = time.Since(start)
		}()
		during, err := ap.run(ctx, 0, done)
		<-done
		if err != nil {
			b.Fatal(err)
		}
		if pruneErr != nil {
			b.Fatal(pruneErr)
		}
		if res.LogLines != int64(total/perDeployment*perDeployment) {
			b.Fatalf("pruned %d lines, want %d", res.LogLines, total)
		}
		var kept int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM deployment_logs WHERE deployment_id = $1`, d.ID).Scan(&kept); err != nil {
			b.Fatal(err)
		}
		if kept != ap.seq {
			b.Fatalf("the running deployment has %d lines, %d were appended", kept, ap.seq)
		}
		p99b, p99d := percentile(base, 0.99), percentile(during, 0.99)
		b.Logf("append batches: %d before, %d during the prune (%s)", len(base), len(during), pruneTime.Round(time.Second))
		b.ReportMetric(float64(res.LogLines), "lines-pruned")
		b.ReportMetric(float64(res.LogLines)/pruneTime.Seconds(), "pruned-lines/s")
		b.ReportMetric(ms(percentile(base, 0.5)), "p50-append-ms-before")
		b.ReportMetric(ms(percentile(during, 0.5)), "p50-append-ms-during")
		b.ReportMetric(ms(p99b), "p99-append-ms-before")
		b.ReportMetric(ms(p99d), "p99-append-ms-during")
		b.ReportMetric(float64(p99d)/float64(p99b), "p99-during/before")
	}
}

// appender sends 50 lines every 50 ms to one deployment, timing each batch.
type appender struct {
	st  *store.Store
	id  uuid.UUID
	seq int64
}

// run appends for d, or until stop is closed, and returns the latencies.
func (a *appender) run(ctx context.Context, d time.Duration, stop <-chan struct{}) ([]time.Duration, error) {
	const batch, every = 50, 50 * time.Millisecond
	var end <-chan time.Time
	if d > 0 {
		end = time.After(d)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lat []time.Duration
	for {
		select {
		case <-end:
			return lat, nil
		case <-stop:
			return lat, nil
		case <-tick.C:
		}
		seqs := make([]int64, batch)
		streams := make([]store.Stream, batch)
		lines := make([]string, batch)
		at := make([]time.Time, batch)
		for i := range batch {
			a.seq++
			seqs[i], streams[i], at[i] = a.seq, store.StreamStdout, time.Now()
			lines[i] = fmt.Sprintf("%08d %s", a.seq, "terraform output of a running apply, about eighty bytes long....")
		}
		start := time.Now()
		if _, err := a.st.AppendLogs(ctx, a.id, seqs, streams, lines, at); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(start))
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
