package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

// chromiumPath finds headless Chromium; the test fails (not skips) without
// it, so CI cannot pass by not running it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the real-browser test needs Chromium: install it with `apt-get install -y chromium` (.ci/run does)")
	return ""
}

// browser starts a fresh headless Chromium for the test.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(bctx), "starting Chromium")
	// A script error leaves the page half-updated while the test may still
	// find what it waits for: any uncaught exception fails the test.
	var mu sync.Mutex
	var thrown []string
	require.NoError(t, chromedp.Listen(bctx, func(ev any) {
		if ex, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			msg := ex.ExceptionDetails.Text
			if ex.ExceptionDetails.Exception != nil {
				msg += " " + ex.ExceptionDetails.Exception.Description
			}
			thrown = append(thrown, msg)
			mu.Unlock()
		}
	}))
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(thrown) > 0 {
			t.Errorf("the page threw: %s", strings.Join(thrown, "; "))
		}
	})
	return bctx
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// waitFor polls a JavaScript condition in the page.
func waitFor(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%s); last error: %v", timeout, what, expr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// randomANSILines makes lines dense with escape sequences, fragments of
// them and control characters (valid UTF-8, as logstream stores).
func randomANSILines(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"\x1b", "[", "]", ";", "m", "0", "1", "3", "8", "5", "2", "9", "4", "38;5;", "48;2;", "\x07", "\\", "(", "B",
		"K", "\x1b[", "\x1b]", "\x1b[0m", "\x1b[1;31m", "a", "b", " ", "\t", "\x08", "\x7f", "é", "✓", "🍇", ":", "999", "<b>"}
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for j := rng.IntN(30); j >= 0; j-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		out[i] = b.String()
	}
	return out
}

// visible is a JavaScript test that the element is rendered (CSS included).
func visible(selector string) string {
	return fmt.Sprintf(`(function (el) { return !!el && el.getClientRects().length > 0; })(document.querySelector(%q))`, selector)
}

const domLines = `Array.from(document.querySelectorAll('#terminal .line')).map(function (l) { return {seq: Number(l.dataset.seq), text: l.textContent}; })`

type domLine struct {
	Seq  int64  `json:"seq"`
	Text string `json:"text"`
}

// TestBrowserLiveTerminal drives the portal in headless Chromium while a
// real reconciler agent runs a deployment: sign in, press Deploy, watch the
// lines arrive live with the status, reload in the middle of the run, and
// check that the final page holds every line exactly once, in order, with
// hostile lines shown as text.
func TestBrowserLiveTerminal(t *testing.T) {
	e := setup(t)
	bctx := browser(t, e.ctx)

	// Sign in through the form.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(e.ts.URL+"/clusters/eu-1/configs/prod"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), testToken),
		chromedp.Click(chromedp.CSS(`form[aria-labelledby="login-token"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value="apply"]`)),
	))

	// The page's ANSI converter agrees with ansi.go on every golden case
	// and on random escape-heavy lines.
	var inputs []string
	for _, c := range ansiInputs {
		inputs = append(inputs, c.in)
	}
	inputs = append(inputs, randomANSILines(500)...)
	in, err := json.Marshal(inputs)
	require.NoError(t, err)
	fromJS := eval[[][]Segment](t, bctx, fmt.Sprintf(`%s.map(function (s) { return window.GrapeANSI.segments(s); })`, in))
	require.Len(t, fromJS, len(inputs))
	for i, line := range inputs {
		want := ANSISegments(line)
		if want == nil {
			want = []Segment{}
		}
		require.Equal(t, want, fromJS[i], "portal.js and ansi.go differ on %q", line)
	}

	// A real agent runs the deployment: phase A streams, then waits for the
	// test (which reloads the page meanwhile), phase B streams to the end.
	gate := make(chan struct{})
	const phaseA, phaseB = 60, 60
	coloured := "\x1b[1;31mError:\x1b[0m something \x1b[32mgreen\x1b[0m"
	work := reconciler.WorkFunc(func(ctx context.Context, run *reconciler.Run) store.Outcome {
		if err := run.SetPhase(ctx, store.PhasePlan); err != nil {
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: err.Error()}
		}
		out := run.Logs.Writer(store.StreamStdout)
		for i := 1; i <= phaseA; i++ {
			fmt.Fprintf(out, "phase A line %d\n", i)
			time.Sleep(30 * time.Millisecond)
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: "test ended"}
		}
		for i := 1; i <= phaseB; i++ {
			fmt.Fprintf(out, "phase B line %d\n", i)
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Fprintln(out, coloured)
		fmt.Fprintln(out, "Error: Invalid value for variable")
		fmt.Fprintln(out, "Warning: Argument is deprecated")
		fmt.Fprintln(out, "  Error: not a heading")
		for _, l := range hostileLines {
			fmt.Fprintln(run.Logs.Writer(store.StreamStderr), l)
		}
		if err := run.Store().SetOutputs(ctx, run.Deployment.ID, run.AgentID(), map[string]any{
			"vpc_id": map[string]any{"value": "vpc-0abc"}, "db_password": map[string]any{"sensitive": true, "value": "(sensitive)"},
		}); err != nil {
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: err.Error()}
		}
		return store.Outcome{Status: store.StatusSucceeded}
	})
	opener := func(ctx context.Context, d store.Deployment) (reconciler.LogSink, error) {
		s, err := logstream.Open(ctx, e.pool, d.ID, logstream.Options{FlushInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, err
		}
		return s, nil
	}

	// Deploy from the config page; the browser lands on the deployment.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`button[value="apply"]`)),
		chromedp.WaitVisible(chromedp.CSS("#terminal")),
	))
	loc := eval[string](t, bctx, `location.pathname`)
	id := uuid.MustParse(strings.TrimPrefix(loc, "/deployments/"))
	waitFor(t, bctx, "the queued status", `document.querySelector('[data-field="status"]').textContent === 'queued'`, 10*time.Second)
	waitFor(t, bctx, "the live stream, queued", `document.getElementById('term-state').textContent === 'live: queued, waiting for an agent'`, 10*time.Second)
	require.True(t, eval[bool](t, bctx, visible("#queue-place")))
	require.Contains(t, eval[string](t, bctx, `document.getElementById('queue-place').textContent`), "Queued: next in its config's queue")

	agent, err := reconciler.New(e.st, e.dbURL, work, reconciler.Options{
		ClusterID: "eu-1", AgentID: "browser-agent", Logs: opener, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	agentCtx, stopAgent := context.WithCancel(e.ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(agentCtx) }()
	t.Cleanup(func() {
		stopAgent()
		select {
		case <-gate:
		default:
			close(gate)
		}
		<-agentDone
	})

	// Lines and the status arrive without any navigation, and the terminal
	// follows the end.
	waitFor(t, bctx, "running status", `document.querySelector('[data-field="status"]').textContent === 'in_progress'`, 20*time.Second)
	waitFor(t, bctx, "the queue note gone", `!document.getElementById('queue-place').getClientRects().length`, 10*time.Second)
	require.Equal(t, "live", eval[string](t, bctx, `document.getElementById('term-state').textContent`))
	waitFor(t, bctx, "40 live lines", `document.querySelectorAll('#terminal .line').length >= 40`, 20*time.Second)
	waitFor(t, bctx, "the terminal following the end", `(function (t) { return t.scrollHeight > t.clientHeight && t.scrollHeight - t.scrollTop - t.clientHeight < 8; })(document.getElementById('terminal'))`, 15*time.Second)
	require.Equal(t, "plan", eval[string](t, bctx, `document.querySelector('[data-field="phase"]').textContent`))

	// Reload in the middle of phase A: the page renders what is stored and
	// the stream resumes after it.
	require.NoError(t, chromedp.Do(bctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#terminal"))))
	waitFor(t, bctx, "all of phase A after the reload", fmt.Sprintf(`Array.from(document.querySelectorAll('#terminal .line')).some(function (l) { return l.textContent === 'phase A line %d'; })`, phaseA), 20*time.Second)

	// The person scrolls up to read; new lines must not pull the view down.
	require.False(t, eval[bool](t, bctx, visible("#term-follow")), "the follow button shows while following")
	eval[bool](t, bctx, `(function (t) { t.scrollTop = 0; return true; })(document.getElementById('terminal'))`)
	waitFor(t, bctx, "the follow button", visible("#term-follow"), 15*time.Second)
	close(gate)

	waitFor(t, bctx, "the final status", `document.querySelector('[data-field="status"]').textContent === 'succeeded'`, 30*time.Second)
	waitFor(t, bctx, "the end of the stream", `document.getElementById('term-state').textContent === 'finished'`, 10*time.Second)
	require.Less(t, eval[float64](t, bctx, `document.getElementById('terminal').scrollTop`), 50.0, "auto-scroll pulled a reader back down")
	require.Equal(t, "done", eval[string](t, bctx, `document.querySelector('[data-field="phase"]').textContent`))
	require.False(t, eval[bool](t, bctx, visible(`[data-show="can_cancel"]`)), "cancel still offered after the end")
	// The page was opened while queued (Attempt 0, Started —) and reloaded
	// while running: the end must show what the row says, without a reload.
	fin := e.deployment(id)
	require.Equal(t, "1 of 3 on agent browser-agent", eval[string](t, bctx, `document.querySelector('[data-field="attempt"]').textContent`))
	require.Equal(t, formatTimePtr(fin.StartedAt), eval[string](t, bctx, `document.querySelector('[data-field="started_at"]').textContent`))
	require.Equal(t, formatTimePtr(fin.FinishedAt), eval[string](t, bctx, `document.querySelector('[data-field="finished_at"]').textContent`))
	require.Equal(t, []string{"db_password = (sensitive value)", "vpc_id = \"vpc-0abc\""}, eval[[]string](t, bctx,
		`Array.from(document.querySelectorAll('[data-field="outputs"] li')).map(function (l) { return l.textContent; })`), "the outputs after apply, live")

	// Every stored line exactly once, in order, as text.
	stored, err := e.st.ReadLogs(e.ctx, id, 0, 100000)
	require.NoError(t, err)
	require.Greater(t, len(stored), phaseA+phaseB)
	got := eval[[]domLine](t, bctx, domLines)
	require.Len(t, got, len(stored), "gap or duplicate in the page")
	for i, l := range stored {
		var text strings.Builder
		for _, s := range ANSISegments(l.Line) {
			text.WriteString(s.Text)
		}
		require.Equal(t, domLine{Seq: l.Seq, Text: text.String()}, got[i], "line %d", i)
	}
	for _, h := range hostileLines {
		require.True(t, eval[bool](t, bctx, fmt.Sprintf(`Array.from(document.querySelectorAll('#terminal .line')).some(function (l) { return l.textContent === %q; })`, h)), h)
	}
	require.Equal(t, 0, eval[int](t, bctx, `document.querySelectorAll('#terminal script, #terminal img, #terminal b').length`), "log text became markup")
	require.True(t, eval[bool](t, bctx, `typeof window.__pwned === 'undefined'`), "a log line ran script")
	require.Equal(t, []string{"ansi-b ansi-f1", "ansi-f2"}, eval[[]string](t, bctx,
		`Array.from(document.querySelectorAll('#terminal .line span')).map(function (s) { return s.className; })`))

	// Diagnostic headings are coloured as they stream in.
	diagClasses := `['Error: Invalid value for variable', 'Warning: Argument is deprecated', '  Error: not a heading'].map(function (t) { return Array.from(document.querySelectorAll('#terminal .line')).filter(function (l) { return l.textContent === t; })[0].className; })`
	require.Equal(t, []string{"line st-stdout diag-error", "line st-stdout diag-warning", "line st-stdout"}, eval[[]string](t, bctx, diagClasses))

	// Hovering a line shows when it was stored: a streamed line here, a
	// rendered one after the reload below.
	hoverTitle := func(seq int64) string {
		return eval[string](t, bctx, fmt.Sprintf(`(function (l) { l.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); return l.title; })(document.querySelector('#terminal .line[data-seq="%d"]'))`, seq))
	}
	lineTime := func(l store.LogLine) string { return l.CreatedAt.UTC().Format("2006-01-02 15:04:05.000Z") }
	last := stored[len(stored)-1]
	require.Equal(t, lineTime(last), hoverTitle(last.Seq))

	// A finished deployment opened afresh shows the full log at once.
	require.NoError(t, chromedp.Do(bctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#terminal"))))
	require.Equal(t, "finished", eval[string](t, bctx, `document.getElementById('term-state').textContent`))
	require.Len(t, eval[[]domLine](t, bctx, domLines), len(stored))
	require.Equal(t, lineTime(stored[0]), hoverTitle(stored[0].Seq))
	// A phase line also says how long the phase took: here plan, the last
	// phase, until the last line.
	var planLine *store.LogLine
	for i, l := range stored {
		if l.Stream == store.StreamAgent && l.Line == "phase: plan" {
			planLine = &stored[i]
		}
	}
	require.NotNil(t, planLine, "no phase line in the log")
	tenths := (stored[len(stored)-1].CreatedAt.UnixMilli() - planLine.CreatedAt.UnixMilli() + 50) / 100
	require.Equal(t, fmt.Sprintf("%s · phase plan took %d.%d s", lineTime(*planLine), tenths/10, tenths%10), hoverTitle(planLine.Seq))
	require.Equal(t, []string{"line st-stdout diag-error", "line st-stdout diag-warning", "line st-stdout"}, eval[[]string](t, bctx, diagClasses), "rendered on the server the same")

	require.False(t, eval[bool](t, bctx, visible("#term-follow")), "the follow button shows while following")
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	shot := filepath.Join(t.TempDir(), "deployment.png")
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot of the finished deployment: %s", shot)
	if dir := os.Getenv("GRAPE_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "deployment.png"), png, 0o644)
	}
}

// signInBrowser signs in through the form and lands on path.
func signInBrowser(t *testing.T, bctx context.Context, e *env, path, waitFor string) {
	t.Helper()
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(e.ts.URL+path),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), testToken),
		chromedp.Click(chromedp.CSS(`form[aria-labelledby="login-token"] button`)),
		chromedp.WaitVisible(chromedp.CSS(waitFor)),
	))
}

// TestBrowserReview: in a real browser, the approval page shows a changed
// tag old → new above the button, the diff arrives live on a page opened
// before the plan, and at a phone's 390 px no page is wider than the screen.
func TestBrowserReview(t *testing.T) {
	e := setup(t)
	bctx := browser(t, e.ctx)
	d := e.running(e.cfg, store.EnqueueParams{RequireApproval: true})
	// Opened before the plan: no diff yet.
	signInBrowser(t, bctx, e, "/deployments/"+d.ID.String(), "#terminal")
	waitFor(t, bctx, "the live stream", `document.getElementById('term-state').textContent === 'live'`, 10*time.Second)
	require.False(t, eval[bool](t, bctx, visible("#diff")), "an empty diff section shows")

	diff := plandiff.Diff{Resources: []plandiff.Resource{{Address: "module.vpc.aws_vpc.this[0]", Action: "update", Attributes: []plandiff.Attribute{
		{Path: "tags.team", Action: "change", Old: "blue", New: "green"},
		{Path: "tags.long", Action: "add", New: strings.Repeat("a-very-long-unbroken-value-", 20)},
	}}}}
	require.NoError(t, e.st.SetPlanDiff(e.ctx, d.ID, testAgent, diff))
	require.NoError(t, e.st.AwaitApproval(e.ctx, d.ID, testAgent))
	const teamRow = `Array.from(document.querySelectorAll('#diff tr')).map(function (r) { return r.textContent; }).filter(function (s) { return s.indexOf('tags.team') >= 0; })[0] || ''`
	waitFor(t, bctx, "the diff, live", `(`+teamRow+`) === '~tags.team"blue" → "green"'`, 20*time.Second)
	waitFor(t, bctx, "the approve button", visible(`form[action$="/approve"] button`), 10*time.Second)
	require.True(t, eval[bool](t, bctx, `document.querySelector('#diff').getBoundingClientRect().bottom <= document.querySelector('form[action$="/approve"] button').getBoundingClientRect().top`), "the diff is not above the approve button")

	// Server-rendered the same, after a reload.
	require.NoError(t, chromedp.Do(bctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#diff"))))
	require.Equal(t, `~tags.team"blue" → "green"`, eval[string](t, bctx, teamRow))
	require.True(t, eval[bool](t, bctx, `document.querySelector('#diff details').open`))
	screenshot(t, bctx, "approval.png")

	// A phone: nothing wider than the screen, sign-out on it.
	e.addLines(d.ID, 1, store.StreamStdout, strings.Repeat("x", 500))
	require.NoError(t, chromedp.Do(bctx, chromedp.EmulateViewport(390, 844)))
	for _, path := range []string{"/", "/clusters/eu-1", "/clusters/eu-1/configs/prod", "/deployments", "/deployments/" + d.ID.String(), "/drift", "/audit"} {
		require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.ts.URL+path), chromedp.WaitVisible(chromedp.CSS("main"))))
		require.LessOrEqual(t, eval[int](t, bctx, `document.documentElement.scrollWidth`), 390, "%s is wider than a 390 px screen", path)
		require.True(t, eval[bool](t, bctx, `(function (b) { var r = b.getBoundingClientRect(); return r.width > 0 && r.left >= 0 && r.right <= 390; })(document.querySelector('form.logout button'))`), "%s: sign out is off the screen", path)
	}
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.ts.URL+"/deployments/"+d.ID.String()), chromedp.WaitVisible(chromedp.CSS("#diff"))))
	screenshot(t, bctx, "approval-390.png")
}

// screenshot saves the page for a person to look at: its path is in the
// test log, and a copy goes to GRAPE_SCREENSHOT_DIR when set.
func screenshot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	shot := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot: %s", shot)
	if dir := os.Getenv("GRAPE_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
}
