package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/metrics"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// gathered is a registry's families by name, for reading single series.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, m *metrics.Metrics) gathered {
	t.Helper()
	mfs, err := m.Registry().Gather()
	require.NoError(t, err)
	out := gathered{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series finds the one series of name whose labels include want.
func (g gathered) series(t *testing.T, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf, ok := g[name]
	require.True(t, ok, "metric %s is not exported", name)
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "series %s%v", name, want)
	return found[0]
}

func (g gathered) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return g.series(t, name, labels).GetCounter().GetValue()
}

func (g gathered) gauge(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return g.series(t, name, labels).GetGauge().GetValue()
}

func (g gathered) histogram(t *testing.T, name string, labels map[string]string) (count uint64, sum float64) {
	t.Helper()
	h := g.series(t, name, labels).GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

func TestPickupLatency(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := created.Add(d); return &v }
	phase := func(p store.Phase) *store.Phase { return &p }
	for _, tc := range []struct {
		name string
		d    store.Deployment
		want time.Duration
		ok   bool
	}{
		{"first attempt", store.Deployment{Attempt: 1, CreatedAt: created, ClaimedAt: at(1500 * time.Millisecond), Phase: phase(store.PhaseClaimed)}, 1500 * time.Millisecond, true},
		{"claimed in the same instant", store.Deployment{Attempt: 1, CreatedAt: created, ClaimedAt: at(0)}, 0, true},
		// Timestamps of one statement can be a microsecond apart the wrong way round.
		{"clock jitter is not negative", store.Deployment{Attempt: 1, CreatedAt: created, ClaimedAt: at(-time.Microsecond)}, 0, true},
		{"requeued attempt is not measured", store.Deployment{Attempt: 2, CreatedAt: created, ClaimedAt: at(10 * time.Minute), Phase: phase(store.PhaseClaimed)}, 0, false},
		{"not claimed", store.Deployment{Attempt: 0, CreatedAt: created}, 0, false},
		{"approved plan resumed: from approval to this claim", store.Deployment{Attempt: 1, CreatedAt: created, ClaimedAt: at(time.Second),
			ApprovedAt: at(time.Hour), HeartbeatAt: at(time.Hour + 300*time.Millisecond), Phase: phase(store.PhaseApply)}, 300 * time.Millisecond, true},
		{"approved plan without heartbeat", store.Deployment{Attempt: 1, CreatedAt: created, ApprovedAt: at(time.Hour), Phase: phase(store.PhaseApply)}, 0, false},
	} {
		got, ok := metrics.PickupLatency(tc.d)
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}
}

func TestRescueDecision(t *testing.T) {
	t.Parallel()
	awaiting := store.Deployment{Status: store.StatusAwaitingApproval}
	running := store.Deployment{Status: store.StatusInProgress}
	for _, tc := range []struct {
		r    store.Rescued
		want string
	}{
		{store.Rescued{Deployment: running, Decision: store.RescueDecision{Requeue: true}}, "requeued"},
		{store.Rescued{Deployment: running, Decision: store.RescueDecision{Outcome: store.Outcome{Status: store.StatusFailed, Kind: store.KindAgentLost}}}, "failed"},
		{store.Rescued{Deployment: running, Decision: store.RescueDecision{Outcome: store.Outcome{Status: store.StatusCancelled, Kind: store.KindCancelled}}}, "cancelled"},
		{store.Rescued{Deployment: awaiting, Decision: store.RescueDecision{Outcome: store.Outcome{Status: store.StatusFailed, Kind: store.KindAgentLost}}}, "orphaned_approval"},
	} {
		require.Equal(t, tc.want, metrics.RescueDecision(tc.r))
	}
}

// TestObserverCounts feeds the observer what one agent sees and reads the
// registry back.
func TestObserverCounts(t *testing.T) {
	t.Parallel()
	m := metrics.New("v1.2.3")
	now := time.Now()
	claimedAt := now.Add(2 * time.Second)
	apply := store.Deployment{ID: uuid.New(), Action: store.ActionApply, Attempt: 1, CreatedAt: now, ClaimedAt: &claimedAt}
	retry := apply
	retry.Attempt = 2
	plan := store.Deployment{ID: uuid.New(), Action: store.ActionPlan, Attempt: 1, CreatedAt: now, ClaimedAt: &now}

	m.Claimed(apply)
	m.Claimed(retry) // not a pickup: requeued
	m.Claimed(plan)
	m.PhaseDone(apply, store.PhaseRender, 40*time.Millisecond)
	m.PhaseDone(apply, store.PhasePlan, 12*time.Second)
	m.PhaseDone(apply, store.PhaseApply, 95*time.Second)
	m.PhaseDone(plan, store.PhasePlan, 8*time.Second)
	m.Finished(apply, store.Outcome{Status: store.StatusSucceeded}, 2*time.Minute)
	m.Finished(plan, store.Outcome{Status: store.StatusFailed, Kind: store.KindStateLock, Error: "locked"}, 3*time.Second)
	m.Rescued(store.Rescued{Deployment: apply, Decision: store.RescueDecision{Requeue: true}})
	m.Rescued(store.Rescued{Deployment: apply, Decision: store.RescueDecision{Outcome: store.Outcome{Status: store.StatusFailed}}})
	m.Rescued(store.Rescued{Deployment: apply, Decision: store.RescueDecision{Outcome: store.Outcome{Status: store.StatusFailed}}})
	m.DriftChecked(store.DriftReport{Status: store.DriftDrifted})
	m.DriftChecked(store.DriftReport{Status: store.DriftInSync})
	m.DriftChecked(store.DriftReport{Status: store.DriftInSync})
	running := 3
	m.SetRunning(func() int { return running })

	g := gather(t, m)
	require.Equal(t, 1.0, g.counter(t, "grape_deployments_total", map[string]string{"action": "apply", "status": "succeeded"}))
	require.Equal(t, 1.0, g.counter(t, "grape_deployments_total", map[string]string{"action": "plan", "status": "failed"}))
	require.Equal(t, 0.0, g.counter(t, "grape_deployments_total", map[string]string{"action": "destroy", "status": "failed"}), "zero series exist before the first event")
	require.Equal(t, 1.0, g.counter(t, "grape_deployment_errors_total", map[string]string{"kind": "state_lock"}))
	n, sum := g.histogram(t, "grape_deployment_duration_seconds", map[string]string{"action": "apply"})
	require.Equal(t, uint64(1), n)
	require.InDelta(t, 120, sum, 1e-9)

	n, sum = g.histogram(t, "grape_phase_duration_seconds", map[string]string{"phase": "plan"})
	require.Equal(t, uint64(2), n)
	require.InDelta(t, 20, sum, 1e-9)
	n, _ = g.histogram(t, "grape_phase_duration_seconds", map[string]string{"phase": "apply"})
	require.Equal(t, uint64(1), n)
	n, _ = g.histogram(t, "grape_phase_duration_seconds", map[string]string{"phase": "render"})
	require.Equal(t, uint64(1), n)

	n, sum = g.histogram(t, "grape_pickup_latency_seconds", nil)
	require.Equal(t, uint64(2), n, "the requeued attempt is not a pickup")
	require.InDelta(t, 2, sum, 1e-9)

	require.Equal(t, 1.0, g.counter(t, "grape_lease_expiries_total", map[string]string{"decision": "requeued"}))
	require.Equal(t, 2.0, g.counter(t, "grape_lease_expiries_total", map[string]string{"decision": "failed"}))
	require.Equal(t, 0.0, g.counter(t, "grape_lease_expiries_total", map[string]string{"decision": "orphaned_approval"}))
	require.Equal(t, 1.0, g.counter(t, "grape_drift_checks_total", map[string]string{"status": "drifted"}))
	require.Equal(t, 2.0, g.counter(t, "grape_drift_checks_total", map[string]string{"status": "in_sync"}))
	require.Equal(t, 0.0, g.counter(t, "grape_drift_checks_total", map[string]string{"status": "error"}))

	require.Equal(t, 3.0, g.gauge(t, "grape_agent_running_deployments", nil))
	running = 0
	require.Equal(t, 0.0, gather(t, m).gauge(t, "grape_agent_running_deployments", nil), "read at scrape time")
	require.Equal(t, 1.0, g.gauge(t, "grape_build_info", map[string]string{"version": "v1.2.3", "go_version": runtime.Version()}))
}

// fakeStream is a log stream whose counters the test moves.
type fakeStream struct {
	mu sync.Mutex
	st logstream.Stats
}

func (f *fakeStream) Stats() logstream.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeStream) set(durable, batches int64, buffered int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Durable, f.st.Batches, f.st.Buffered = durable, batches, buffered
}

func TestLogMetricsSumOpenAndClosedStreams(t *testing.T) {
	t.Parallel()
	m := metrics.New("dev")
	read := func() (lines, batches, buffered float64) {
		g := gather(t, m)
		return g.counter(t, "grape_log_lines_total", nil), g.counter(t, "grape_log_batches_total", nil), g.gauge(t, "grape_log_buffer_lines", nil)
	}
	a, b := &fakeStream{}, &fakeStream{}
	doneA := m.TrackLogStream(a)
	doneB := m.TrackLogStream(b)
	a.set(100, 2, 40)
	b.set(10, 1, 5)
	lines, batches, buffered := read()
	require.Equal(t, []float64{110, 3, 45}, []float64{lines, batches, buffered}, "open streams count while they run")

	a.set(140, 3, 0) // a's last lines are stored, then it closes
	doneA()
	doneA() // a second call changes nothing
	a.set(999, 99, 99)
	lines, batches, buffered = read()
	require.Equal(t, []float64{150, 4, 5}, []float64{lines, batches, buffered}, "a closed stream keeps its final counts and nothing later")

	b.set(10, 1, 0)
	doneB()
	lines, batches, buffered = read()
	require.Equal(t, []float64{150, 4, 0}, []float64{lines, batches, buffered})
}

// TestLogMetricsOfARealStream checks the metrics read what logstream
// counts: every committed line and batch of a real stream.
func TestLogMetricsOfARealStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.DB(t)
	st := store.New(pool)
	_, err := st.CreateCluster(ctx, "m", "")
	require.NoError(t, err)
	cfg, err := st.UpsertConfig(ctx, "m", "c", json.RawMessage(`{"modules":{}}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "m", ConfigID: cfg.ID})
	require.NoError(t, err)

	m := metrics.New("dev")
	s, err := logstream.Open(ctx, pool, d.ID, logstream.Options{BatchLines: 100, SpillDir: t.TempDir()})
	require.NoError(t, err)
	done := m.TrackLogStream(s)
	w := s.Writer(store.StreamStdout)
	for i := range 1000 {
		_, err := fmt.Fprintf(w, "line %d\n", i)
		require.NoError(t, err)
	}
	s.Agentf("done")
	require.NoError(t, s.Close(ctx))
	done()

	final := s.Stats()
	g := gather(t, m)
	require.Equal(t, 1001.0, g.counter(t, "grape_log_lines_total", nil))
	require.Equal(t, float64(final.Batches), g.counter(t, "grape_log_batches_total", nil))
	require.GreaterOrEqual(t, final.Batches, int64(10), "batches of at most 100 lines")
	require.Equal(t, 0.0, g.gauge(t, "grape_log_buffer_lines", nil))
	lines, err := st.ReadLogs(ctx, d.ID, 0, 5000)
	require.NoError(t, err)
	require.Len(t, lines, 1001)
}

// TestMetricNamesFollowConventions runs Prometheus' own linter over every
// family Grape defines (units in names, _total on counters, help text).
func TestMetricNamesFollowConventions(t *testing.T) {
	t.Parallel()
	m := metrics.New("dev")
	m.PhaseDone(store.Deployment{}, store.PhasePlan, time.Second)
	m.Finished(store.Deployment{Action: store.ActionApply}, store.Outcome{Status: store.StatusFailed, Kind: store.KindApply}, time.Second)
	g := gather(t, m)
	var ours []*dto.MetricFamily
	var names []string
	for name, mf := range g {
		if strings.HasPrefix(name, "grape_") {
			ours = append(ours, mf)
			names = append(names, name)
		}
	}
	sort.Strings(names)
	require.Equal(t, []string{
		"grape_agent_running_deployments", "grape_build_info", "grape_deployment_duration_seconds",
		"grape_deployment_errors_total", "grape_deployments_total", "grape_drift_checks_total",
		"grape_git_notes_pending", "grape_lease_expiries_total", "grape_log_batches_total", "grape_log_buffer_lines",
		"grape_log_lines_total", "grape_log_spilled_lines_total", "grape_log_write_retries_total",
		"grape_phase_duration_seconds", "grape_pickup_latency_seconds",
	}, names)
	m.SetNotesPending(3)
	require.Equal(t, 3.0, gather(t, m)["grape_git_notes_pending"].GetMetric()[0].GetGauge().GetValue())
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
	// Go runtime and process metrics are there for the usual dashboards.
	require.Contains(t, g, "go_goroutines")
	require.Contains(t, g, "process_resident_memory_bytes")
}
