package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grapehq/grape/redact"
)

// ReadyTimeout bounds one /readyz answer: a database that does not answer a
// ping within it counts as down.
const ReadyTimeout = 2 * time.Second

// Check is one condition of readiness.
type Check struct {
	Name string
	// Fn returns nil when the condition holds, else an error whose text a
	// person reads in the /readyz body. It must honour ctx.
	Fn func(ctx context.Context) error
}

// Pinger is a database connection pool (*pgxpool.Pool).
type Pinger interface {
	Ping(ctx context.Context) error
}

// DatabaseCheck is ready when the control-plane database answers a ping.
func DatabaseCheck(p Pinger) Check {
	return Check{Name: "database", Fn: func(ctx context.Context) error {
		if err := p.Ping(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no answer to a ping within %s", ReadyTimeout)
			}
			return fmt.Errorf("ping failed: %w", err)
		}
		return nil
	}}
}

// ListenerCheck is ready when the agent's LISTEN connection is up, or the
// agent polls only (reconciler.Agent.Listening covers both). Without LISTEN
// the agent still works, by polling, but misses its promise of picking up
// work within milliseconds, and the connection being down usually means the
// database is not reachable in the way it was configured.
func ListenerCheck(listening func() bool) Check {
	return Check{Name: "listener", Fn: func(context.Context) error {
		if !listening() {
			return errors.New("LISTEN connection is down (reconnecting; polling meanwhile)")
		}
		return nil
	}}
}

// DrainCheck fails once stopping is closed: after the first SIGTERM the agent
// claims nothing new while its running deployments finish, and its listener
// is closed, so /readyz says why instead of blaming the connection.
func DrainCheck(stopping <-chan struct{}) Check {
	return Check{Name: "agent", Fn: func(context.Context) error {
		select {
		case <-stopping:
			return errors.New("draining: claiming nothing new, waiting for running deployments")
		default:
			return nil
		}
	}}
}

// Health serves /healthz, /readyz and /metrics.
type Health struct {
	metrics http.Handler
	timeout time.Duration
	checks  atomic.Pointer[[]Check]
	mux     *http.ServeMux
}

// NewHealth builds the handler; metrics may be nil (no /metrics). Until
// SetChecks is called, /readyz answers 503 "starting": a process that is
// still waiting for its database is alive but not ready.
func NewHealth(metrics http.Handler) *Health {
	h := &Health{metrics: metrics, timeout: ReadyTimeout, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	if metrics != nil {
		h.mux.Handle("GET /metrics", metrics)
	}
	return h
}

// SetChecks sets what /readyz checks (all must pass).
func (h *Health) SetChecks(checks ...Check) {
	c := append([]Check(nil), checks...)
	h.checks.Store(&c)
}

// ServeHTTP implements http.Handler.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// healthz says the process is alive and serving: a supervisor restarts it
// only when this fails, never because the database is away (that is what
// /readyz is for; restarting would not bring the database back).
func (h *Health) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok\n")
}

func (h *Health) readyz(w http.ResponseWriter, r *http.Request) {
	checks := h.checks.Load()
	if checks == nil {
		writeText(w, http.StatusServiceUnavailable, "not ready: starting (connecting to the database)\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	var failed, passed []string
	for _, c := range *checks {
		if err := c.Fn(ctx); err != nil {
			// Error texts of a failed connection name host and user, never
			// the password; redact anyway in case a URL slips in.
			failed = append(failed, fmt.Sprintf("%s: %s", c.Name, redact.Text(oneLine(err.Error()))))
		} else {
			passed = append(passed, c.Name+": ok")
		}
	}
	if len(failed) > 0 {
		writeText(w, http.StatusServiceUnavailable, "not ready\n"+strings.Join(append(failed, passed...), "\n")+"\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n"+strings.Join(passed, "\n")+"\n")
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
