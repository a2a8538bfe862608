package logstream_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localenv"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

// BenchmarkLogPipeline measures the log pipeline against a fresh PostgreSQL
// cluster with fsync on (durability as in production), all in one run so the
// figures compare:
//
//   - pipeline: a child process prints N 80-byte lines (default 1,000,000)
//     into a Stream (with a 20-secret redactor) until Close has stored them;
//     also reports the agent's peak heap and RSS and the most lines held in
//     memory.
//   - bare_copy: the same lines, generated up front, CopyFrom'd in batches
//     of 500 with nothing around it: the ceiling.
//   - insert_per_line: one INSERT statement per line (20,000 lines).
//   - latency_100 and latency_10000: a paced producer for 5 s; p50/p99/max of
//     produced (Write called) → COPY committed.
//
// Run: go test -run '^$' -bench LogPipeline -benchtime 1x ./logstream/
// GRAPE_BENCH_LINES overrides N.
func BenchmarkLogPipeline(b *testing.B) {
	ctx := context.Background()
	pool := benchPool(b)
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("GRAPE_BENCH_LINES")); err == nil && v > 0 {
		n = v
	}
	var secrets []string
	for i := range 20 {
		secrets = append(secrets, fmt.Sprintf("bench-secret-%02d-%s", i, uuid.NewString()[:8+i%10]))
	}
	red := redact.New(0, secrets...)
	quiet := slog.New(slog.DiscardHandler)

	b.Run("pipeline", func(b *testing.B) {
		var total time.Duration
		var peak memPeak
		var maxInMemory int
		var spilled int64
		for b.Loop() {
			id := uuid.New()
			s, err := logstream.Open(ctx, pool, id, logstream.Options{SpillDir: b.TempDir(), Redactor: red, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			stopSampling := peak.sample(func() {
				if m := s.Stats().InMemory; m > maxInMemory {
					maxInMemory = m
				}
			})
			start := time.Now()
			err = runChild(ctx, s, "interleaved", append(childEnvFor(n, 0), childBufEnv+"=1")...)
			if err == nil {
				err = s.Close(ctx)
			}
			total += time.Since(start)
			stopSampling()
			if err != nil {
				b.Fatal(err)
			}
			spilled += s.Stats().Spilled
			requireCount(b, pool, id, n)
		}
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "lines/s")
		b.ReportMetric(float64(peak.heap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peak.rss)/(1<<20), "peak-rss-MiB")
		b.ReportMetric(float64(maxInMemory), "max-lines-in-memory")
		b.ReportMetric(float64(spilled)/float64(b.N), "spilled-lines")
	})

	b.Run("bare_copy", func(b *testing.B) {
		lines := make([]string, n)
		for i := range lines {
			lines[i] = childLine(childStream(i+1), i+1)
		}
		b.ResetTimer()
		var total time.Duration
		for b.Loop() {
			id := uuid.New()
			start := time.Now()
			for from := 0; from < n; from += 500 {
				to := min(from+500, n)
				_, err := pool.CopyFrom(ctx, pgx.Identifier{"deployment_logs"}, []string{"deployment_id", "seq", "stream", "line"},
					pgx.CopyFromSlice(to-from, func(i int) ([]any, error) {
						return []any{id, int64(from + i + 1), "stdout", lines[from+i]}, nil
					}))
				if err != nil {
					b.Fatal(err)
				}
			}
			total += time.Since(start)
			requireCount(b, pool, id, n)
		}
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "lines/s")
	})

	b.Run("insert_per_line", func(b *testing.B) {
		const m = 20_000
		var total time.Duration
		for b.Loop() {
			id := uuid.New()
			start := time.Now()
			for i := 1; i <= m; i++ {
				if _, err := pool.Exec(ctx, `INSERT INTO deployment_logs (deployment_id, seq, stream, line) VALUES ($1, $2, 'stdout', $3)`,
					id, int64(i), childLine("out", i)); err != nil {
					b.Fatal(err)
				}
			}
			total += time.Since(start)
			requireCount(b, pool, id, m)
		}
		b.ReportMetric(float64(m*b.N)/total.Seconds(), "lines/s")
	})

	for _, rate := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("latency_%d", rate), func(b *testing.B) {
			var lat []time.Duration
			var mu sync.Mutex
			for b.Loop() {
				s, err := logstream.Open(ctx, pool, uuid.New(), logstream.Options{Redactor: red, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				s.SetDurableHook(func(produced []int64, committed time.Time) {
					mu.Lock()
					defer mu.Unlock()
					for _, at := range produced {
						lat = append(lat, committed.Sub(time.Unix(0, at)))
					}
				})
				w := s.Writer(store.StreamStdout)
				pace := newPacer(rate)
				for i := 1; i <= 5*rate; i++ {
					if _, err := io.WriteString(w, childLine("out", i)+"\n"); err != nil {
						b.Fatal(err)
					}
					pace.wait(i)
				}
				if err := s.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}

// benchPool starts a private cluster with fsync on, for the benchmark only.
func benchPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	dir, err := os.MkdirTemp("", "grape-bench-pg-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the server runs as postgres when we are root
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: dir})
	if err != nil {
		b.Fatalf("starting PostgreSQL (needs initdb and pg_ctl, Debian package postgresql-15): %v", err)
	}
	b.Cleanup(func() { _ = pg.Stop(context.Background()) })
	return testsupport.Pool(b, testsupport.MigratedDatabaseOn(b, pg))
}

func requireCount(b *testing.B, pool *pgxpool.Pool, id uuid.UUID, want int) {
	b.Helper()
	var got, maxSeq int
	if err := pool.QueryRow(context.Background(), `SELECT count(*), coalesce(max(seq), 0) FROM deployment_logs WHERE deployment_id = $1`, id).Scan(&got, &maxSeq); err != nil {
		b.Fatal(err)
	}
	if got != want || maxSeq != want {
		b.Fatalf("stored %d lines up to seq %d, want %d", got, maxSeq, want)
	}
}

// memPeak samples the Go heap in use and the process's resident set.
type memPeak struct {
	heap, rss uint64
}

func (p *memPeak) sample(also func()) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(samples)
		p.heap = max(p.heap, samples[0].Value.Uint64())
		p.rss = max(p.rss, residentBytes())
		also()
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		runtime.GC()
	}
}

// residentBytes is VmRSS from /proc/self/status (0 where there is none).
func residentBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
