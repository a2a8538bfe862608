package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localenv"
	"github.com/grapehq/grape/store"
)

// BenchmarkLogInsertUnderRLS measures what row-level security costs the log
// pipeline: 200,000 lines of 80 bytes in batches of 500, one transaction per
// batch, written
//
//   - owner_copy: as the table owner with COPY, the pipeline's path today;
//   - owner_append: as the owner through grape_append_logs;
//   - owner_insert: as the owner with INSERT … SELECT unnest (no policy), to
//     tell what INSERT costs against COPY from what the policy costs;
//   - agent_insert_policy: as an agent role with INSERT … SELECT unnest, so
//     the agent_append policy is checked per row (COPY is refused under RLS);
//   - agent_append: as an agent role through grape_append_logs, which
//     checks once per batch.
//
// One op writes 200,000 lines with each of the five; run with -benchtime 3x.
// Rates are 500 lines over the median batch time (commit included).
func BenchmarkLogInsertUnderRLS(b *testing.B) {
	// durable is what a real server does; nofsync takes the commit flush
	// away, leaving the CPU cost of each path (the worst case for the ratios).
	durable, nofsync := testsupport.StartDurablePostgres(b), testsupport.StartPostgres(b)
	b.Run("durable", func(b *testing.B) { benchLogInsert(b, durable) })
	b.Run("nofsync", func(b *testing.B) { benchLogInsert(b, nofsync) })
}

func benchLogInsert(b *testing.B, pg *localenv.Postgres) {
	const lines, batch = 200_000, 500
	ctx := context.Background()
	url := testsupport.MigratedDatabaseOn(b, pg)
	owner := testsupport.Pool(b, url)
	admin := store.New(owner)
	cluster := uniqueCluster("bench")
	_, err := admin.CreateCluster(ctx, cluster, "")
	if err != nil {
		b.Fatal(err)
	}
	role, err := admin.CreateAgentRole(ctx, cluster, store.AgentRoleOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = admin.DropAgentRole(context.Background(), cluster) })
	agentURL, err := store.AgentURL(url, role.Name, role.Password)
	if err != nil {
		b.Fatal(err)
	}
	agent := testsupport.Pool(b, agentURL)

	// Lines of exactly 80 bytes, as terraform prints them.
	text := make([]string, batch)
	for i := range text {
		s := fmt.Sprintf("module.vpc.aws_subnet.private[%d]: Still creating... [%ds elapsed]", i, i)
		text[i] = s + strings.Repeat(".", 80-len(s))
	}
	streams := make([]string, batch)
	for i := range streams {
		streams[i] = "stdout"
	}

	// running returns a fresh in-progress deployment of its own config, so
	// every op writes into an empty key range, as a run does.
	n := 0
	running := func(b *testing.B) uuid.UUID {
		b.Helper()
		n++
		cfg, err := admin.UpsertConfig(ctx, cluster, fmt.Sprintf("cfg-%d", n), json.RawMessage(`{}`), store.ConfigSettings{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := admin.Enqueue(ctx, store.EnqueueParams{ClusterID: cluster, ConfigID: cfg.ID}); err != nil {
			b.Fatal(err)
		}
		d, err := admin.Claim(ctx, cluster, "bench", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		return d.ID
	}

	type writer func(ctx context.Context, id uuid.UUID, seqs []int64, created []time.Time) error
	copyWith := func(pool *pgxpool.Pool) writer {
		cols := []string{"deployment_id", "seq", "stream", "line", "created_at"}
		return func(ctx context.Context, id uuid.UUID, seqs []int64, created []time.Time) error {
			_, err := pool.CopyFrom(ctx, pgx.Identifier{"deployment_logs"}, cols, pgx.CopyFromSlice(len(seqs), func(i int) ([]any, error) {
				return []any{id, seqs[i], streams[i], text[i], created[i]}, nil
			}))
			return err
		}
	}
	appendWith := func(pool *pgxpool.Pool) writer {
		return func(ctx context.Context, id uuid.UUID, seqs []int64, created []time.Time) error {
			_, err := pool.Exec(ctx, store.AppendLogsSQL, id, seqs, streams, text, created)
			return err
		}
	}
	insertWith := func(pool *pgxpool.Pool) writer {
		return func(ctx context.Context, id uuid.UUID, seqs []int64, created []time.Time) error {
			_, err := pool.Exec(ctx, insertIgnoringDuplicates, id, seqs, streams, text, created)
			return err
		}
	}

	cases := []struct {
		name  string
		write writer
	}{
		{"owner_copy", copyWith(owner)},
		{"owner_append", appendWith(owner)},
		{"owner_insert", insertWith(owner)},
		{"agent_insert_policy", insertWith(agent)},
		{"agent_append", appendWith(agent)},
	}
	// The machine is shared and its load comes in bursts: the cases take
	// turns batch by batch, each into a deployment of its own, and the rate
	// is taken from each case's median batch time, so a burst costs every
	// case alike and moves no ratio.
	seqs := make([]int64, batch)
	created := make([]time.Time, batch)
	took := make([][]time.Duration, len(cases))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ids := make([]uuid.UUID, len(cases))
		for c := range cases {
			ids[c] = running(b)
		}
		b.StartTimer()
		for first, turn := 1, 0; first <= lines; first, turn = first+batch, turn+1 {
			now := time.Now()
			for j := range seqs {
				seqs[j] = int64(first + j)
				created[j] = now
			}
			for k := range cases {
				c := (turn + k) % len(cases)
				start := time.Now()
				if err := cases[c].write(ctx, ids[c], seqs, created); err != nil {
					b.Fatalf("%s: batch at seq %d: %v", cases[c].name, first, err)
				}
				took[c] = append(took[c], time.Since(start))
			}
		}
	}
	rate := make([]float64, len(cases))
	for c := range cases {
		slices.Sort(took[c])
		rate[c] = batch / took[c][len(took[c])/2].Seconds()
		b.ReportMetric(rate[c], cases[c].name+"_lines/s")
	}
	b.ReportMetric(rate[4]/rate[0], "agent_append/owner_copy")
	b.ReportMetric(rate[3]/rate[0], "agent_policy/owner_copy")
	b.ReportMetric(rate[3]/rate[2], "agent_policy/owner_insert")
	b.ReportMetric(rate[4]/rate[1], "agent_append/owner_append")
}
