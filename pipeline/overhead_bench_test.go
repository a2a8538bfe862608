package pipeline_test

import (
	"context"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/pipeline"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// timeline collects when each deployment passed the marks that bound
// terraform, and when it was claimed and finished.
type timeline struct {
	mu    sync.Mutex
	marks map[uuid.UUID]map[string]time.Time
}

func (t *timeline) set(id uuid.UUID, what string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.marks[id] == nil {
		t.marks[id] = map[string]time.Time{}
	}
	if _, done := t.marks[id][what]; !done || what == string(pipeline.MarkTerraformEnd) {
		t.marks[id][what] = time.Now()
	}
}

func (t *timeline) Claimed(d store.Deployment)                             { t.set(d.ID, "claimed") }
func (t *timeline) PhaseDone(store.Deployment, store.Phase, time.Duration) {}
func (t *timeline) Finished(d store.Deployment, _ store.Outcome, _ time.Duration) {
	t.set(d.ID, "finished")
}
func (t *timeline) Rescued(store.Rescued) {}

// BenchmarkAgentOverhead measures what the agent adds around terraform for a
// 4-module config: claim → terraform starts (render, commit, checkout, row
// updates) and terraform exits → final status written (log flush, outcome).
// Real PostgreSQL (fsync on), a real git workspace, terraform with the AWS
// provider against moto; plan-only deployments, so terraform's own time is
// init + plan.
func BenchmarkAgentOverhead(b *testing.B) {
	ctx := context.Background()
	pg := testsupport.StartDurablePostgres(b)
	url := testsupport.MigratedDatabaseOn(b, pg)
	pool := testsupport.Pool(b, url)
	st := store.New(pool)
	moto := testsupport.Moto(b)
	dataDir := b.TempDir()

	cat, err := render.Default()
	require.NoError(b, err)
	git, err := gitstore.Open(ctx, gitstore.Options{Dir: filepath.Join(dataDir, "workspace.git")})
	require.NoError(b, err)
	b.Cleanup(func() { git.Close() })
	tf, err := runner.New(runner.Config{DataDir: dataDir, ProviderMirror: testsupport.ProviderMirror, ExtraEnv: moto.Env("eu-central-1")})
	require.NoError(b, err)

	tl := &timeline{marks: map[uuid.UUID]map[string]time.Time{}}
	dep := &pipeline.Deployer{
		Templates: func(context.Context) (*render.Catalog, error) { return cat, nil },
		Git:       git, Runner: tf, DataDir: dataDir,
		Timing: func(d store.Deployment, m pipeline.TimingMark) { tl.set(d.ID, string(m)) },
	}
	agent, err := reconciler.New(st, url, dep, reconciler.Options{
		ClusterID: "bench", AgentID: "bench", Observer: tl, PollInterval: 100 * time.Millisecond,
		Logs: func(ctx context.Context, d store.Deployment) (reconciler.LogSink, error) {
			return logstream.Open(ctx, pool, d.ID, logstream.Options{SpillDir: b.TempDir()})
		},
	})
	require.NoError(b, err)
	_, err = st.CreateCluster(ctx, "bench", "")
	require.NoError(b, err)
	in, err := cat.Validate([]byte(`{"modules": {"vpc": {}, "eks": {}, "rds": {}, "karpenter": {}}}`))
	require.NoError(b, err)
	cfg, err := st.UpsertConfig(ctx, "bench", "four", in.JSON(), store.ConfigSettings{})
	require.NoError(b, err)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- agent.Run(runCtx) }()
	defer func() { stop(); <-done }()

	const deployments = 8
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		var pre, post, total []time.Duration
		for i := 0; i < deployments; i++ {
			d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "bench", ConfigID: cfg.ID, Action: store.ActionPlan})
			require.NoError(b, err)
			for {
				got, err := st.GetDeployment(ctx, d.ID)
				require.NoError(b, err)
				if got.Status.Final() {
					require.Equal(b, store.StatusSucceeded, got.Status, ptr.Deref(got.Error))
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			require.Eventually(b, func() bool { tl.mu.Lock(); defer tl.mu.Unlock(); return !tl.marks[d.ID]["finished"].IsZero() }, 10*time.Second, 5*time.Millisecond)
			tl.mu.Lock()
			m := tl.marks[d.ID]
			tl.mu.Unlock()
			pre = append(pre, m[string(pipeline.MarkTerraformStart)].Sub(m["claimed"]))
			post = append(post, m["finished"].Sub(m[string(pipeline.MarkTerraformEnd)]))
			total = append(total, m["finished"].Sub(m["claimed"]))
		}
		b.ReportMetric(ms(median(pre)), "claim-to-terraform-p50-ms")
		b.ReportMetric(ms(median(post)), "terraform-to-status-p50-ms")
		b.ReportMetric(ms(median(pre)+median(post)), "overhead-p50-ms")
		b.ReportMetric(ms(median(total)), "deployment-p50-ms")
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
