// Package metrics is the agent's observability surface: Prometheus metrics of
// what the agent does (an implementation of reconciler.Observer plus hooks
// for log streams and drift reports), and the HTTP endpoints a supervisor
// and a scraper read — /healthz, /readyz and /metrics.
//
// Every metric lives in a registry of its own, never the global default, so
// two agents in one process (tests) do not share counters, and nothing a
// dependency registers globally leaks into Grape's /metrics.
package metrics

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

// Buckets for phase and deployment durations: a render or commit takes well
// under a second, a plan against AWS 10 s to minutes, an apply of EKS or RDS
// 10 to 40 minutes, and --timeout-apply allows 2 h.
var durationBuckets = []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}

// Buckets for pickup latency: with LISTEN a claim follows the INSERT within
// milliseconds; by polling within --poll-interval (1 s); anything in minutes
// means busy slots or a config waiting behind an older deployment.
var pickupBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// Metrics holds an agent's metrics. It implements reconciler.Observer.
type Metrics struct {
	reg *prometheus.Registry

	deployments   *prometheus.CounterVec
	errors        *prometheus.CounterVec
	durations     *prometheus.HistogramVec
	phases        *prometheus.HistogramVec
	pickup        prometheus.Histogram
	leaseExpiries *prometheus.CounterVec
	drift         *prometheus.CounterVec
	logs          *logCollector
	running       atomic.Pointer[func() int]
	notesPending  prometheus.Gauge
}

var _ reconciler.Observer = (*Metrics)(nil)

// New builds the metrics of one agent process; version is Grape's version,
// exported as grape_build_info.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grape_deployments_total",
			Help: "Deployments this agent ran to an outcome, by action and final status (awaiting_approval counts the plan half of a gated apply).",
		}, []string{"action", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grape_deployment_errors_total",
			Help: "Deployments that ended with an error, by error kind (state_lock, agent_lost, plan, apply, ...).",
		}, []string{"kind"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grape_deployment_duration_seconds",
			Help:    "Time from claim to recorded outcome, by action.",
			Buckets: durationBuckets,
		}, []string{"action"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grape_phase_duration_seconds",
			Help:    "Time spent in each phase of a deployment (render, commit, checkout, init, plan, cost, apply, outputs).",
			Buckets: durationBuckets,
		}, []string{"phase"}),
		pickup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "grape_pickup_latency_seconds",
			Help:    "Time a runnable deployment waited before this agent claimed it (queued to claimed; approved to resumed). Requeued attempts are not counted.",
			Buckets: pickupBuckets,
		}),
		leaseExpiries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grape_lease_expiries_total",
			Help: "Deployments this agent took back from a lost agent, by decision: requeued (before apply), failed (apply had started, or no attempts left), cancelled (a cancel was pending), orphaned_approval (the agent holding an approved plan is gone).",
		}, []string{"decision"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grape_drift_checks_total",
			Help: "Drift reports this agent recorded, by status (in_sync, drifted, error).",
		}, []string{"status"}),
		logs: newLogCollector(),
		notesPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grape_git_notes_pending",
			Help: "Outcome notes (refs/notes/grape) kept in this agent's workspace clone because the git remote could not be reached; pushed by the next retry. Alert when it stays above 0.",
		}),
	}
	running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "grape_agent_running_deployments",
		Help: "Deployments (drift checks included) this agent is running now.",
	}, func() float64 {
		if f := m.running.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "grape_build_info",
		Help:        "Always 1; the labels say which Grape and Go built this agent.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
	})
	build.Set(1)

	// Zero series for every outcome an alert may compute a rate of, so
	// rate() works before the first failure rather than after it.
	for _, a := range []store.Action{store.ActionPlan, store.ActionApply, store.ActionDestroy, store.ActionDrift} {
		for _, s := range []store.Status{store.StatusSucceeded, store.StatusFailed, store.StatusCancelled, store.StatusAwaitingApproval} {
			m.deployments.WithLabelValues(string(a), string(s))
		}
	}
	for _, d := range []string{decisionRequeued, decisionFailed, decisionCancelled, decisionOrphanedApproval} {
		m.leaseExpiries.WithLabelValues(d)
	}
	for _, s := range []store.DriftStatus{store.DriftInSync, store.DriftDrifted, store.DriftError} {
		m.drift.WithLabelValues(string(s))
	}

	m.reg.MustRegister(m.deployments, m.errors, m.durations, m.phases, m.pickup, m.leaseExpiries, m.drift,
		m.logs, running, build, m.notesPending,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry every metric is in (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
}

// SetRunning sets where grape_agent_running_deployments is read from
// (reconciler.Agent.Running). The agent is built after its observer, so this
// is set afterwards; until then the gauge is 0.
func (m *Metrics) SetRunning(f func() int) { m.running.Store(&f) }

// SetNotesPending records how many git notes wait in the workspace clone
// for the remote (gitstore.Store.PendingNotes).
func (m *Metrics) SetNotesPending(n int) { m.notesPending.Set(float64(max(n, 0))) }

// Claimed implements reconciler.Observer: it records the pickup latency.
func (m *Metrics) Claimed(d store.Deployment) {
	if wait, ok := PickupLatency(d); ok {
		m.pickup.Observe(wait.Seconds())
	}
}

// PhaseDone implements reconciler.Observer.
func (m *Metrics) PhaseDone(_ store.Deployment, phase store.Phase, took time.Duration) {
	m.phases.WithLabelValues(string(phase)).Observe(took.Seconds())
}

// Finished implements reconciler.Observer.
func (m *Metrics) Finished(d store.Deployment, o store.Outcome, took time.Duration) {
	m.deployments.WithLabelValues(string(d.Action), string(o.Status)).Inc()
	if o.Kind != "" {
		m.errors.WithLabelValues(string(o.Kind)).Inc()
	}
	m.durations.WithLabelValues(string(d.Action)).Observe(took.Seconds())
}

// Decisions of grape_lease_expiries_total.
const (
	decisionRequeued         = "requeued"
	decisionFailed           = "failed"
	decisionCancelled        = "cancelled"
	decisionOrphanedApproval = "orphaned_approval"
)

// Rescued implements reconciler.Observer.
func (m *Metrics) Rescued(r store.Rescued) {
	m.leaseExpiries.WithLabelValues(RescueDecision(r)).Inc()
}

// RescueDecision names what became of a deployment taken back from a lost
// agent, as grape_lease_expiries_total labels it.
func RescueDecision(r store.Rescued) string {
	switch {
	case r.Decision.Requeue:
		return decisionRequeued
	case r.Deployment.Status == store.StatusAwaitingApproval:
		return decisionOrphanedApproval
	case r.Decision.Outcome.Status == store.StatusCancelled:
		return decisionCancelled
	default:
		return decisionFailed
	}
}

// DriftChecked counts a stored drift report (drift.Recorder.Observe).
func (m *Metrics) DriftChecked(r store.DriftReport) {
	m.drift.WithLabelValues(string(r.Status)).Inc()
}

// PickupLatency is how long d waited for an agent, from the row's own
// timestamps (one clock: the database's). A first attempt waited from
// created_at to claimed_at. An approved plan resumed by its agent waited from
// approved_at until this claim (heartbeat_at; claimed_at keeps the first
// claim). A requeued attempt is not measured: the row does not say when it
// was requeued, and created_at would add the lost attempt's whole run.
func PickupLatency(d store.Deployment) (time.Duration, bool) {
	switch {
	case d.ApprovedAt != nil && d.PhaseName() == store.PhaseApply:
		if d.HeartbeatAt == nil {
			return 0, false
		}
		return nonNegative(d.HeartbeatAt.Sub(*d.ApprovedAt)), true
	case d.Attempt == 1 && d.ClaimedAt != nil && !d.CreatedAt.IsZero():
		return nonNegative(d.ClaimedAt.Sub(d.CreatedAt)), true
	}
	return 0, false
}

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }
