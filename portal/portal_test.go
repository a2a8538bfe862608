package portal

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

const (
	testToken      = "test-token-0123456789"
	testUser       = "alice"
	testPassword   = "correct horse battery staple"
	commitTemplate = "https://git.example.com/infra/commit/{sha}"
	validIntent    = `{"region":"eu-central-1","modules":{"vpc":{}}}`
	testAgent      = "agent-1"
)

// The user ids the sign-ins act as; setup makes each an admin of eu-1.
var (
	testTokenUser = uuid.MustParse("0b7f6a3c-2d1e-4f5a-9b8c-7d6e5f4a3b2c")
	testAliceID   = uuid.MustParse("a11ce000-0000-4000-8000-000000000001")
	testAdaID     = uuid.MustParse("8d0f5c3e-1111-4222-8333-944455556666") // userClaims' sub
)

// testHash is alice's bcrypt hash, made once at the cheapest cost.
var testHash = sync.OnceValue(func() []byte {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return h
})

// env is one test's portal on its own database, with a cluster "eu-1" and
// a config "prod".
type env struct {
	t     testing.TB
	ctx   context.Context
	dbURL string
	pool  *pgxpool.Pool
	st    *store.Store
	srv   *Server
	ts    *httptest.Server
	cfg   store.Config
}

func setup(t *testing.T, mods ...func(*Options)) *env {
	t.Helper()
	t.Parallel()
	return setupTB(t, mods...)
}

// setupTB is setup for benchmarks (which cannot run in parallel).
func setupTB(t testing.TB, mods ...func(*Options)) *env {
	t.Helper()
	dbURL := testsupport.DatabaseURL(t)
	pool := testsupport.Pool(t, dbURL)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	st := store.New(pool)
	opts := Options{
		Store: st, ConnString: dbURL, CommitURL: commitTemplate,
		Auth: Auth{Token: testToken, TokenUser: testTokenUser, Users: map[string]User{testUser: {Hash: testHash(), ID: testAliceID}},
			SupabaseJWTSecret: []byte(testJWTSecret)},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mods {
		m(&opts)
	}
	srv, err := New(opts)
	require.NoError(t, err)

	// Request contexts derive from runCtx, as in `grape serve`, so open
	// live terminals end when the test does and ts.Close does not wait.
	runCtx, stop := context.WithCancel(context.Background())
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.BaseContext = func(net.Listener) context.Context { return runCtx }
	ts.Start()
	t.Cleanup(ts.Close)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	require.Eventually(t, srv.notifier.Alive, 30*time.Second, 10*time.Millisecond, "LISTEN connection did not come up")

	_, err = st.CreateCluster(ctx, "eu-1", "production in Frankfurt")
	require.NoError(t, err)
	cfg, err := st.UpsertConfig(ctx, "eu-1", "prod", json.RawMessage(validIntent), store.ConfigSettings{})
	require.NoError(t, err)
	require.NoError(t, st.RegisterAgent(ctx, store.Agent{ID: testAgent, ClusterID: "eu-1", Hostname: "runner-7", Version: "1.2.3"}))
	for _, u := range []uuid.UUID{testTokenUser, testAliceID, testAdaID} {
		_, err := st.SetMember(ctx, "eu-1", u, store.RoleAdmin)
		require.NoError(t, err)
	}
	return &env{t: t, ctx: ctx, dbURL: dbURL, pool: pool, st: st, srv: srv, ts: ts, cfg: cfg}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newConfig adds another config to eu-1 (one run per config at a time).
func (e *env) newConfig(name string) store.Config {
	e.t.Helper()
	c, err := e.st.UpsertConfig(e.ctx, "eu-1", name, json.RawMessage(validIntent), store.ConfigSettings{})
	require.NoError(e.t, err)
	return c
}

func (e *env) enqueue(c store.Config, p store.EnqueueParams) store.Deployment {
	e.t.Helper()
	p.ClusterID, p.ConfigID = c.ClusterID, c.ID
	if p.RequestedBy == "" {
		p.RequestedBy = "test"
	}
	d, err := e.st.Enqueue(e.ctx, p)
	require.NoError(e.t, err)
	return d
}

// applied runs an apply of c to success at commit sha, finished at at, as
// an agent would: the commit a drift check compares with and a
// remediation re-applies.
func (e *env) applied(c store.Config, sha string, at time.Time) {
	e.t.Helper()
	d := e.running(c, store.EnqueueParams{})
	require.NoError(e.t, e.st.SetCommit(e.ctx, d.ID, testAgent, sha))
	require.NoError(e.t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	_, err := e.pool.Exec(e.ctx, `UPDATE deployments SET finished_at = $2 WHERE id = $1`, d.ID, at)
	require.NoError(e.t, err)
}

// running queues a deployment of c and claims it as testAgent.
func (e *env) running(c store.Config, p store.EnqueueParams) store.Deployment {
	e.t.Helper()
	want := e.enqueue(c, p)
	d, err := e.st.Claim(e.ctx, "eu-1", testAgent, time.Minute)
	require.NoError(e.t, err)
	require.Equal(e.t, want.ID, d.ID, "claimed another deployment than the one just queued")
	return d
}

func (e *env) awaitingApproval(c store.Config) store.Deployment {
	e.t.Helper()
	d := e.running(c, store.EnqueueParams{RequireApproval: true})
	require.NoError(e.t, e.st.AwaitApproval(e.ctx, d.ID, testAgent))
	return d
}

// addLines stores lines first, first+1, … as the agent's log pipeline does
// (one COPY per batch, which the trigger announces once).
func (e *env) addLines(id uuid.UUID, first int64, stream store.Stream, lines ...string) {
	e.t.Helper()
	rows := make([][]any, len(lines))
	for i, l := range lines {
		rows[i] = []any{id, first + int64(i), string(stream), l}
	}
	_, err := e.pool.CopyFrom(e.ctx, pgx.Identifier{"deployment_logs"}, []string{"deployment_id", "seq", "stream", "line"}, pgx.CopyFromRows(rows))
	require.NoError(e.t, err)
}

func (e *env) deployment(id uuid.UUID) store.Deployment {
	e.t.Helper()
	d, err := e.st.GetDeployment(e.ctx, id)
	require.NoError(e.t, err)
	return d
}

// client is a browser: a cookie jar, no automatic redirects.
type client struct {
	t    testing.TB
	base string
	hc   *http.Client
	csrf string
}

func (e *env) client() *client {
	jar, err := cookiejar.New(nil)
	require.NoError(e.t, err)
	return &client{t: e.t, base: e.ts.URL, hc: &http.Client{
		Jar:           jar,
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *client) do(method, path string, form url.Values, header http.Header) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	require.NoError(c.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp, string(b)
}

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	resp, body := c.do(http.MethodGet, path, nil, nil)
	return resp.StatusCode, body
}

// post sends a form with the session's CSRF token, as the page's forms do.
func (c *client) post(path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if !form.Has("csrf") {
		form.Set("csrf", c.csrf)
	}
	return c.do(http.MethodPost, path, form, nil)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfFrom(t testing.TB, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	require.NotNil(t, m, "no CSRF token in the page")
	return m[1]
}

// login fills the sign-in form and returns the response to the POST.
func (c *client) login(fields url.Values) (*http.Response, string) {
	c.t.Helper()
	status, page := c.get("/login")
	require.Equal(c.t, http.StatusOK, status)
	fields.Set("csrf", csrfFrom(c.t, page))
	return c.do(http.MethodPost, "/login", fields, nil)
}

// signedIn returns a client signed in with the static token.
func (e *env) signedIn() *client {
	e.t.Helper()
	c := e.client()
	resp, body := c.login(url.Values{"token": {testToken}})
	require.Equal(e.t, http.StatusSeeOther, resp.StatusCode, body)
	status, page := c.get("/")
	require.Equal(e.t, http.StatusOK, status)
	c.csrf = csrfFrom(e.t, page)
	return c
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID, Event, Data string
}

// sseConn reads a live terminal stream in the background.
type sseConn struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
	done   chan struct{}
}

func (c *client) events(path, lastEventID string) *sseConn {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	require.NoError(c.t, err)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	hc := *c.hc
	hc.Timeout = 0 // a stream lasts as long as the run
	resp, err := hc.Do(req)
	require.NoError(c.t, err)
	require.Equal(c.t, http.StatusOK, resp.StatusCode)
	require.Equal(c.t, "text/event-stream", resp.Header.Get("Content-Type"))
	s := &sseConn{t: c.t, resp: resp, events: make(chan sseEvent, 10000), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" || ev.Data != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	c.t.Cleanup(s.close)
	return s
}

// next returns the next event that is not a status event, failing after timeout.
func (s *sseConn) next(timeout time.Duration) (sseEvent, bool) {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return sseEvent{}, false
			}
			return ev, true
		case <-deadline:
			s.t.Fatalf("no server-sent event within %s", timeout)
		}
	}
}

// collect reads lines until n line events arrived (or end), returning the
// line events and every status seen.
func (s *sseConn) collect(n int, timeout time.Duration) (lines []sseLine, statuses []deploymentState, ended bool) {
	s.t.Helper()
	for len(lines) < n {
		ev, ok := s.next(timeout)
		if !ok {
			return lines, statuses, ended
		}
		switch ev.Event {
		case "line":
			var l sseLine
			require.NoError(s.t, json.Unmarshal([]byte(ev.Data), &l))
			require.Equal(s.t, ev.ID, jsonInt(l.Seq), "event id must be the line's seq")
			lines = append(lines, l)
		case "status":
			var st deploymentState
			require.NoError(s.t, json.Unmarshal([]byte(ev.Data), &st))
			statuses = append(statuses, st)
		case "end":
			return lines, statuses, true
		}
	}
	return lines, statuses, ended
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (s *sseConn) close() {
	s.resp.Body.Close()
	<-s.done
}
