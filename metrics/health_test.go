package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	pool := testsupport.DB(t)
	closed, err := pgxpool.New(context.Background(), testsupport.DatabaseURL(t))
	require.NoError(t, err)
	closed.Close()
	up := func() bool { return true }
	down := func() bool { return false }
	stopping := make(chan struct{})
	close(stopping)

	for _, tc := range []struct {
		name   string
		checks []metrics.Check // nil: SetChecks not called yet
		code   int
		body   []string
	}{
		{"starting", nil, 503, []string{"not ready: starting"}},
		{"database and listener up", []metrics.Check{metrics.DatabaseCheck(pool), metrics.ListenerCheck(up)}, 200, []string{"ok\n", "database: ok", "listener: ok"}},
		{"listener down", []metrics.Check{metrics.DatabaseCheck(pool), metrics.ListenerCheck(down)}, 503,
			[]string{"not ready\n", "listener: LISTEN connection is down", "database: ok"}},
		{"draining", []metrics.Check{metrics.DrainCheck(stopping), metrics.DatabaseCheck(pool), metrics.ListenerCheck(down)}, 503,
			[]string{"agent: draining: claiming nothing new", "database: ok"}},
		{"running", []metrics.Check{metrics.DrainCheck(make(chan struct{})), metrics.DatabaseCheck(pool), metrics.ListenerCheck(up)}, 200,
			[]string{"agent: ok", "database: ok", "listener: ok"}},
		{"pool closed", []metrics.Check{metrics.DatabaseCheck(closed), metrics.ListenerCheck(up)}, 503,
			[]string{"database: ping failed: closed pool", "listener: ok"}},
	} {
		h := metrics.NewHealth(nil)
		if tc.checks != nil {
			h.SetChecks(tc.checks...)
		}
		code, body := get(t, h, "/readyz")
		require.Equal(t, tc.code, code, "%s: %s", tc.name, body)
		for _, want := range tc.body {
			require.Contains(t, body, want, tc.name)
		}
		// Liveness never depends on the database.
		code, body = get(t, h, "/healthz")
		require.Equal(t, 200, code, tc.name)
		require.Equal(t, "ok\n", body)
	}
}

// TestReadyzWhenTheServerStops stops a real PostgreSQL under a pool that was
// working: /readyz turns 503 at once, naming the database, and back to 200
// when it is up again.
func TestReadyzWhenTheServerStops(t *testing.T) {
	t.Parallel()
	pg := testsupport.StartPostgres(t)
	pool := testsupport.Pool(t, pg.SuperuserURL("postgres"))
	h := metrics.NewHealth(nil)
	h.SetChecks(metrics.DatabaseCheck(pool), metrics.ListenerCheck(func() bool { return true }))
	code, body := get(t, h, "/readyz")
	require.Equal(t, 200, code, body)

	ctx := context.Background()
	require.NoError(t, pg.Stop(ctx))
	start := time.Now()
	code, body = get(t, h, "/readyz")
	require.Equal(t, 503, code, body)
	require.Contains(t, body, "database: ping failed")
	require.NotContains(t, body, pg.Password, "a failed connection never shows the password")
	require.Equal(t, 1, strings.Count(body, "database:"))
	require.Less(t, time.Since(start), metrics.ReadyTimeout+time.Second)

	require.NoError(t, pg.Start(ctx))
	require.Eventually(t, func() bool {
		code, _ := get(t, h, "/readyz")
		return code == 200
	}, 30*time.Second, 100*time.Millisecond)
}

// TestReadyzAnswersWithinItsDeadline: a database that hangs (no answer, no
// error) makes /readyz fail after the deadline instead of hanging the probe.
func TestReadyzAnswersWithinItsDeadline(t *testing.T) {
	t.Parallel()
	h := metrics.NewHealth(nil)
	h.SetReadyTimeout(200 * time.Millisecond)
	h.SetChecks(metrics.DatabaseCheck(hangingPinger{}))
	start := time.Now()
	code, body := get(t, h, "/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "database: no answer to a ping within 2s")
	require.Less(t, time.Since(start), 2*time.Second)
}

type hangingPinger struct{}

func (hangingPinger) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestServer serves the three endpoints on a real port, and refuses a port
// that is taken with an error naming the flag.
func TestServer(t *testing.T) {
	t.Parallel()
	m := metrics.New("v9")
	h := metrics.NewHealth(m.Handler())
	var ready atomic.Bool
	h.SetChecks(metrics.ListenerCheck(ready.Load))
	srv, err := metrics.Listen("127.0.0.1:0", h, slogDiscard())
	require.NoError(t, err)
	base := "http://" + srv.Addr()

	fetch := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := fetch("/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, `grape_build_info{go_version="`)
	require.Contains(t, body, `version="v9"} 1`)
	require.Contains(t, body, "# TYPE grape_deployments_total counter")
	code, _ = fetch("/healthz")
	require.Equal(t, 200, code)
	code, _ = fetch("/readyz")
	require.Equal(t, 503, code)
	ready.Store(true)
	code, _ = fetch("/readyz")
	require.Equal(t, 200, code)
	code, _ = fetch("/")
	require.Equal(t, 404, code)

	_, err = metrics.Listen(srv.Addr(), h, slogDiscard())
	require.ErrorContains(t, err, "--metrics-listen "+srv.Addr())
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr, "the bind error is wrapped: %v", err)

	require.NoError(t, srv.Stop(context.Background()))
	_, err = http.Get(base + "/healthz")
	require.Error(t, err, "stopped")
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
