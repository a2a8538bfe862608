package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// BenchmarkNoteLongWaits is one sweep of the long-wait announcer, which
// every agent runs every 5 s, on a busy cluster: 1,000 configs, each with a
// plan parked past half its approval timeout and two runs queued behind it
// for hours (all already announced: the steady state), beside 20,000
// finished deployments. It reports the sweep's latency; nothing is
// announced again.
func BenchmarkNoteLongWaits(b *testing.B) {
	ctx := context.Background()
	pool := testsupport.DB(b)
	st := store.New(pool)
	if _, err := st.CreateCluster(ctx, "bench", ""); err != nil {
		b.Fatal(err)
	}
	// Seeded by SQL: the seed is not what is measured.
	for _, q := range []string{
		`INSERT INTO configs (cluster_id, name, spec) SELECT 'bench', 'c' || g, '{}' FROM generate_series(1, 1000) g`,
		`INSERT INTO deployments (config_id, cluster_id, action, created_at)
SELECT c.id, 'bench', 'plan', now() - interval '1 day' FROM configs c, generate_series(1, 20) WHERE c.cluster_id = 'bench'`,
		`UPDATE deployments SET status = 'succeeded', finished_at = now() - interval '1 day' WHERE cluster_id = 'bench'`,
		`INSERT INTO deployments (config_id, cluster_id, action, created_at)
SELECT c.id, 'bench', 'apply', now() - interval '3 hours' FROM configs c, generate_series(1, 3) WHERE c.cluster_id = 'bench'`,
		`UPDATE deployments d SET status = 'awaiting_approval', awaiting_approval_at = now() - interval '20 hours', claimed_by = 'a', claimed_at = now() - interval '21 hours'
WHERE d.id IN (SELECT DISTINCT ON (config_id) id FROM deployments WHERE cluster_id = 'bench' AND status = 'queued' ORDER BY config_id, id)`,
		`ANALYZE`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	first, err := st.NoteLongWaits(ctx, "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if len(first) != 3000 {
		b.Fatalf("first sweep announced %d waits, want 3000", len(first))
	}
	b.ResetTimer()
	for range b.N {
		ws, err := st.NoteLongWaits(ctx, "bench", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if len(ws) != 0 {
			b.Fatalf("announced %d waits again", len(ws))
		}
	}
}
