package portal

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/store"
)

func TestLogin(t *testing.T) {
	e := setup(t)
	now := time.Now()
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}
	expired := userClaims(now)
	expired["exp"] = now.Add(-time.Hour).Unix()
	cases := []struct {
		name     string
		form     url.Values
		wantUser string // "": refused
		wantMsg  string
	}{
		{"static token", url.Values{"token": {testToken}}, "token", ""},
		{"wrong token", url.Values{"token": {"nope"}}, "", "Wrong token."},
		{"bcrypt user", url.Values{"username": {testUser}, "password": {testPassword}}, testUser, ""},
		{"wrong password", url.Values{"username": {testUser}, "password": {"guess"}}, "", "Wrong user name or password."},
		{"unknown user", url.Values{"username": {"mallory"}, "password": {testPassword}}, "", "Wrong user name or password."},
		{"supabase JWT", url.Values{"token": {signJWT(t, testJWTSecret, hs, userClaims(now))}}, "ada@example.com", ""},
		{"expired JWT", url.Values{"token": {signJWT(t, testJWTSecret, hs, expired)}}, "", "has expired"},
		{"JWT with a wrong signature", url.Values{"token": {signJWT(t, "some-other-projects-secret-of-sufficient-length", hs, userClaims(now))}}, "", "not valid for this project"},
		{"Supabase anon key", url.Values{"token": {signJWT(t, testJWTSecret, hs, map[string]any{"role": "anon", "exp": now.Add(time.Hour).Unix()})}}, "", "not a signed-in Supabase user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := e.client()
			cl.t = t
			resp, body := cl.login(c.form)
			if c.wantUser == "" {
				require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
				require.Contains(t, html.UnescapeString(body), c.wantMsg)
				status, _ := cl.get("/")
				require.Equal(t, http.StatusSeeOther, status, "a refused sign-in must not leave a session")
				return
			}
			require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
			require.Equal(t, "/", resp.Header.Get("Location"))
			var session *http.Cookie
			for _, ck := range resp.Cookies() {
				if ck.Name == "grape_session" {
					session = ck
				}
			}
			require.NotNil(t, session, "no session cookie")
			require.True(t, session.HttpOnly)
			require.Equal(t, http.SameSiteStrictMode, session.SameSite)
			require.False(t, session.Secure, "plain HTTP without --secure-cookies")
			status, page := cl.get("/")
			require.Equal(t, http.StatusOK, status)
			require.Contains(t, page, `<span class="who">`+html.EscapeString(c.wantUser)+`</span>`)
		})
	}
}

func TestLoginNeedsTheFormsCSRFToken(t *testing.T) {
	e := setup(t)
	c := e.client()
	// No login page visited: no login cookie, no token.
	resp, _ := c.do(http.MethodPost, "/login", url.Values{"token": {testToken}}, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	// A token from the page, but posted from another origin.
	_, page := c.get("/login")
	resp, _ = c.do(http.MethodPost, "/login", url.Values{"token": {testToken}, "csrf": {csrfFrom(t, page)}}, http.Header{"Origin": {"https://evil.example"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

func TestSecureCookies(t *testing.T) {
	e := setup(t, func(o *Options) { o.SecureCookies = true })
	c := e.client()
	resp, page := c.do(http.MethodGet, "/login", nil, nil)
	var login *http.Cookie
	for _, ck := range resp.Cookies() {
		login = ck
	}
	require.NotNil(t, login)
	require.Equal(t, "__Host-grape_login", login.Name)
	require.True(t, login.Secure)
	// The jar keeps Secure cookies off plain HTTP, as a browser would; send it by hand.
	resp, _ = c.do(http.MethodPost, "/login", url.Values{"token": {testToken}, "csrf": {csrfFrom(t, page)}},
		http.Header{"Cookie": {login.Name + "=" + login.Value}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "__Host-grape_session" {
			session = ck
		}
	}
	require.NotNil(t, session)
	require.True(t, session.Secure)
	require.True(t, session.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, session.SameSite)
	require.Equal(t, "/", session.Path)
	require.Empty(t, session.Domain)
}

func TestLoginIsRateLimited(t *testing.T) {
	e := setup(t)
	c := e.client()
	for i := 0; i < loginFailures; i++ {
		resp, _ := c.login(url.Values{"token": {"wrong"}})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	resp, _ := c.login(url.Values{"token": {testToken}})
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "even the right token waits out the block")
}

func TestLoginRedirectsBackAndLogout(t *testing.T) {
	e := setup(t)
	c := e.client()
	resp, _ := c.do(http.MethodGet, "/clusters/eu-1?x=1", nil, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	loc := resp.Header.Get("Location")
	require.Equal(t, "/login?next="+url.QueryEscape("/clusters/eu-1?x=1"), loc)
	status, page := c.get(loc)
	require.Equal(t, http.StatusOK, status)
	resp, _ = c.do(http.MethodPost, "/login", url.Values{"token": {testToken}, "csrf": {csrfFrom(t, page)}, "next": {"/clusters/eu-1?x=1"}}, nil)
	require.Equal(t, "/clusters/eu-1?x=1", resp.Header.Get("Location"))

	_, page = c.get("/")
	c.csrf = csrfFrom(t, page)
	resp, _ = c.post("/logout", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	status, _ = c.get("/")
	require.Equal(t, http.StatusSeeOther, status, "signed out")
}

func TestUnauthenticatedRequests(t *testing.T) {
	e := setup(t)
	c := e.client()
	d := e.enqueue(e.cfg, store.EnqueueParams{})
	for _, path := range []string{"/", "/clusters/eu-1", "/deployments/" + d.ID.String(), "/drift", "/deployments/" + d.ID.String() + "/log"} {
		status, _ := c.get(path)
		require.Equal(t, http.StatusSeeOther, status, path)
	}
	resp, _ := c.do(http.MethodGet, "/deployments/"+d.ID.String()+"/events", nil, http.Header{"Accept": {"text/event-stream"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = c.do(http.MethodPost, "/deployments/"+d.ID.String()+"/cancel", url.Values{}, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, store.StatusQueued, e.deployment(d.ID).Status)
	// Public: health and assets.
	status, _ := c.get("/healthz")
	require.Equal(t, http.StatusOK, status)
	status, _ = c.get("/static/portal.js")
	require.Equal(t, http.StatusOK, status)
}

func TestCSRFProtection(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	other := e.signedIn()
	require.NotEqual(t, c.csrf, other.csrf, "CSRF tokens are per session")
	path := "/clusters/eu-1/configs/prod/deployments"
	cases := []struct {
		name   string
		form   url.Values
		header http.Header
	}{
		{"no token", url.Values{"action": {"plan"}}, nil},
		{"empty token", url.Values{"action": {"plan"}, "csrf": {""}}, nil},
		{"wrong token", url.Values{"action": {"plan"}, "csrf": {"AAAA" + c.csrf[4:]}}, nil},
		{"another session's token", url.Values{"action": {"plan"}, "csrf": {other.csrf}}, nil},
		{"right token from another site", url.Values{"action": {"plan"}, "csrf": {c.csrf}}, http.Header{"Origin": {"https://evil.example"}}},
		{"right token, opaque origin", url.Values{"action": {"plan"}, "csrf": {c.csrf}}, http.Header{"Origin": {"null"}}},
	}
	for _, tc := range cases {
		resp, body := c.do(http.MethodPost, path, tc.form, tc.header)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, tc.name)
		require.Contains(t, body, "403 Forbidden", tc.name)
	}
	for _, p := range []string{"/deployments/" + uuid.NewString() + "/cancel", "/deployments/" + uuid.NewString() + "/retry", "/clusters/eu-1/configs/prod/drift-check", "/clusters/eu-1/configs/prod", "/logout"} {
		resp, _ := c.do(http.MethodPost, p, url.Values{}, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, p)
	}
	ds, err := e.srv.st.ListDeployments(e.ctx, store.ListFilter{})
	require.NoError(t, err)
	require.Empty(t, ds, "a refused request queued something")

	// The header works too (for scripts), and the right token passes.
	resp, _ := c.do(http.MethodPost, path, url.Values{"action": {"plan"}}, http.Header{"X-Csrf-Token": {c.csrf}, "Origin": {e.ts.URL}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
}

func securityHeaders(t *testing.T, h http.Header, what string) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'", what)
	require.Contains(t, csp, "frame-ancestors 'none'", what)
	require.NotContains(t, csp, "unsafe-inline", what)
	require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), what)
	require.Equal(t, "DENY", h.Get("X-Frame-Options"), what)
}

func TestPages(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	sha := strings.Repeat("ab", 20)
	d := e.running(e.cfg, store.EnqueueParams{})
	require.NoError(t, e.st.SetCommit(e.ctx, d.ID, testAgent, sha))
	require.NoError(t, e.st.SetPlanSummary(e.ctx, d.ID, testAgent, map[string]any{
		"add": 1, "change": 0, "destroy": 1, "replace": 1,
		"resources": []map[string]any{{"address": "module.vpc.aws_vpc.this", "actions": []string{"delete", "create"}}},
	}))
	require.NoError(t, e.st.SetCost(e.ctx, d.ID, testAgent, map[string]any{"currency": "USD", "total_monthly_cost": "73.0", "diff_total_monthly_cost": "12.5"}))
	require.NoError(t, e.st.SetPolicy(e.ctx, d.ID, testAgent, map[string]any{
		"digest": "sha256:" + strings.Repeat("0f", 32), "denies": 0, "warnings": 1, "rules": 7,
		"verdicts": []map[string]any{{"kind": "warn", "rule": "warn_protected_delete", "file": "approval.rego", "line": 10, "msg": "module.vpc.aws_vpc.this is replaced: a person approves it"}},
	}))
	require.NoError(t, e.st.SetPhase(e.ctx, d.ID, testAgent, store.PhasePlan))
	e.addLines(d.ID, 1, store.StreamAgent, "claimed by agent agent-1")
	_, err := e.pool.Exec(e.ctx, `UPDATE agents SET last_heartbeat_at = now() - interval '5 minutes' WHERE id = $1`, testAgent)
	require.NoError(t, err)
	require.NoError(t, e.st.RegisterAgent(e.ctx, store.Agent{ID: "agent-2", ClusterID: "eu-1", Version: "1.3.0"}))

	cases := []struct {
		path string
		want []string
	}{
		{"/", []string{`<a href="/clusters/eu-1">eu-1</a>`, "production in Frankfurt", "agent-1: offline", "agent-2: online", d.ID.String()}},
		{"/clusters/eu-1", []string{"Cluster eu-1", "runner-7", "1.2.3", `href="/clusters/eu-1/configs/prod"`, "New config", "never checked"}},
		{"/clusters/eu-1/configs/prod", []string{"Config prod", `<span class="module">vpc</span>`, "eu-central-1", "Version 1", `value="plan"`, `value="apply"`, `value="destroy"`, "/clusters/eu-1/configs/prod/edit"}},
		{"/clusters/eu-1/configs/prod/edit", []string{`<textarea id="spec" name="spec"`, `&#34;vpc&#34;`, `name="version" value="1"`}},
		{"/clusters/eu-1/new-config", []string{`<input id="name" name="name"`, `action="/clusters/eu-1/configs"`}},
		{"/deployments", []string{d.ID.String(), "in_progress"}},
		{"/deployments?cluster=eu-1&status=in_progress", []string{d.ID.String()}},
		{"/deployments/" + d.ID.String(), []string{
			`data-field="status" class="status s-in_progress">in_progress`,
			`<dd data-field="phase">plan</dd>`,
			`href="https://git.example.com/infra/commit/` + sha + `"`,
			"1 to add, 0 to change, 1 to destroy (1 replaced)",
			`<span class="act act-replace">replace</span> <code>module.vpc.aws_vpc.this</code>`,
			"USD 73.0 per month (&#43;12.5)",
			`<span data-field="policy">0 denied, 1 warnings · sha256:0f0f0f0f0f0f</span>`,
			`<span class="verdict v-warn">warn</span> module.vpc.aws_vpc.this is replaced: a person approves it <span class="hint">warn_protected_delete (approval.rego:10)</span>`,
			`data-events="/deployments/` + d.ID.String() + `/events"`,
			`data-seq="1" data-t="`,
			`">claimed by agent agent-1</div>`,
		}},
		{"/drift", []string{"eu-1/prod", "never checked"}},
	}
	for _, tc := range cases {
		resp, body := c.do(http.MethodGet, tc.path, nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, tc.path)
		require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"), tc.path)
		require.Equal(t, "no-store", resp.Header.Get("Cache-Control"), tc.path)
		securityHeaders(t, resp.Header, tc.path)
		for _, w := range tc.want {
			require.Contains(t, body, w, tc.path)
		}
		require.NotContains(t, body, "<script>", "%s has an inline script", tc.path)
	}
	// The filter excludes what it should.
	_, body := c.get("/deployments?status=succeeded")
	require.NotContains(t, body, d.ID.String())
}

func TestUnknownIDsAre404(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	missing := uuid.NewString()
	for _, path := range []string{
		"/clusters/nope", "/clusters/NOT_VALID!", "/clusters/eu-1/configs/nope", "/clusters/eu-1/configs/nope/edit",
		"/clusters/nope/configs/prod", "/clusters/nope/new-config", "/clusters/eu-1/configs/BAD.name",
		"/deployments/not-a-uuid", "/deployments/" + missing, "/deployments/" + missing + "/log",
		"/no/such/page", "/static/nope.js",
	} {
		status, body := c.get(path)
		require.Equal(t, http.StatusNotFound, status, path)
		if !strings.HasPrefix(path, "/static/") {
			require.Contains(t, body, "404 Not Found", path)
		}
	}
	resp, _ := c.do(http.MethodGet, "/deployments/"+missing+"/events", nil, http.Header{"Accept": {"text/event-stream"}})
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	for _, path := range []string{
		"/deployments/" + missing + "/approve", "/deployments/" + missing + "/reject", "/deployments/" + missing + "/cancel",
		"/deployments/garbage/cancel", "/drift/" + missing + "/remediate", "/drift/garbage/remediate",
		"/clusters/eu-1/configs/nope/deployments", "/clusters/eu-1/configs/nope", "/clusters/nope/configs",
	} {
		resp, _ := c.post(path, url.Values{"action": {"plan"}, "spec": {validIntent}, "name": {"x"}})
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
	}
}

func TestQueueButtons(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	for _, action := range []string{"plan", "apply"} {
		resp, body := c.post("/clusters/eu-1/configs/prod/deployments", url.Values{"action": {action}})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
		id := uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/"))
		d := e.deployment(id)
		require.Equal(t, store.Action(action), d.Action)
		require.Equal(t, store.StatusQueued, d.Status)
		require.Equal(t, "token", d.RequestedBy)
		require.Equal(t, e.cfg.ID, d.ConfigID)
	}
	// Destroy needs the config's name typed in.
	// A wrong one shows the config page again, the form open with the
	// message at it, not a bare error page.
	for _, confirm := range []string{"", "pro", "PROD"} {
		resp, body := c.post("/clusters/eu-1/configs/prod/deployments", url.Values{"action": {"destroy"}, "confirm": {confirm}})
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, confirm)
		require.Contains(t, html.UnescapeString(body), fmt.Sprintf(`<details class="danger" open>
  <summary>Destroy</summary>
  <p class="message error" id="confirm-error" role="alert">%q is not the config's name: type prod exactly to confirm the destroy.</p>`, confirm))
		require.Contains(t, body, `<input id="confirm" name="confirm" autocomplete="off" required aria-invalid="true" aria-describedby="confirm-error" autofocus>`)
		require.Contains(t, body, `<button type="submit" name="action" value="apply" class="primary">Deploy</button>`)
	}
	resp, _ := c.post("/clusters/eu-1/configs/prod/deployments", url.Values{"action": {"destroy"}, "confirm": {"prod"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	id := uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/"))
	require.Equal(t, store.ActionDestroy, e.deployment(id).Action)

	for _, bad := range []string{"", "drift", "rm -rf"} {
		resp, _ := c.post("/clusters/eu-1/configs/prod/deployments", url.Values{"action": {bad}})
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, bad)
	}
	ds, err := e.srv.st.ListDeployments(e.ctx, store.ListFilter{})
	require.NoError(t, err)
	require.Len(t, ds, 3)
}

func TestApproveRejectCancel(t *testing.T) {
	e := setup(t)
	c := e.signedIn()

	// Reject.
	r := e.awaitingApproval(e.newConfig("reject-me"))
	resp, _ := c.post("/deployments/"+r.ID.String()+"/reject", url.Values{"comment": {"the NAT gateway is not needed"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	got := e.deployment(r.ID)
	require.Equal(t, store.StatusCancelled, got.Status)
	require.Equal(t, store.KindRejected, *got.ErrorKind)
	require.Equal(t, "the NAT gateway is not needed", ptr.Deref(got.ReviewComment))

	// A comment with a terminal control sequence is refused, and nothing
	// is decided.
	bad := e.awaitingApproval(e.newConfig("bad-comment"))
	resp, body := c.post("/deployments/"+bad.ID.String()+"/approve", url.Values{"comment": {"ok \x1b[2J"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "control characters")
	require.Nil(t, e.deployment(bad.ID).ApprovedAt)

	// Approval is refused when the config changed since the plan.
	chCfg := e.newConfig("changed")
	ch := e.awaitingApproval(chCfg)
	_, err := e.st.UpsertConfig(e.ctx, "eu-1", "changed", json.RawMessage(`{"region":"eu-west-1","modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	resp, body = c.post("/deployments/"+ch.ID.String()+"/approve", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "the config changed from v1 to v2")
	require.Equal(t, store.StatusFailed, e.deployment(ch.ID).Status)

	// Cancel: a queued one ends at once, a running one gets a request.
	q := e.enqueue(e.newConfig("queued"), store.EnqueueParams{})
	resp, _ = c.post("/deployments/"+q.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, store.StatusCancelled, e.deployment(q.ID).Status)
	run := e.running(e.cfg, store.EnqueueParams{})
	resp, _ = c.post("/deployments/"+run.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	got = e.deployment(run.ID)
	require.Equal(t, store.StatusInProgress, got.Status)
	require.Equal(t, "token", *got.CancelRequestedBy)
	_, page := c.get("/deployments/" + run.ID.String())
	require.Contains(t, page, `<span data-show="cancel_requested" class="hint">cancel requested</span>`)
	require.Regexp(t, `/cancel" data-show="can_cancel" hidden>`, page)

	// Finished deployments cannot be cancelled.
	require.NoError(t, e.st.Finish(e.ctx, run.ID, testAgent, store.Outcome{Status: store.StatusCancelled, Kind: store.KindCancelled, Error: "cancelled"}))
	resp, body = c.post("/deployments/"+run.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "already cancelled")

	// Approve last: the agent's next claim would be the approved deployment.
	a := e.awaitingApproval(e.newConfig("approve-me"))
	_, page = c.get("/deployments/" + a.ID.String())
	require.Regexp(t, `action="/deployments/`+a.ID.String()+`/approve" class="review" data-show="can_approve">`, page)
	require.Contains(t, page, `<textarea id="review-comment" name="comment"`)
	require.Contains(t, page, `formaction="/deployments/`+a.ID.String()+`/reject"`)
	resp, _ = c.post("/deployments/"+a.ID.String()+"/approve", url.Values{"comment": {"checked the subnet sizes with <ops>"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/deployments/"+a.ID.String(), resp.Header.Get("Location"))
	got = e.deployment(a.ID)
	require.NotNil(t, got.ApprovedAt)
	require.Equal(t, "token", *got.ApprovedBy)
	require.Equal(t, "checked the subnet sizes with <ops>", ptr.Deref(got.ReviewComment))
	_, page = c.get("/deployments/" + a.ID.String())
	require.Contains(t, page, `<q data-field="review_comment" data-show="review_comment">checked the subnet sizes with &lt;ops&gt;</q>`, "the comment is shown, escaped")
	require.Regexp(t, `action="/deployments/`+a.ID.String()+`/approve" class="review" data-show="can_approve" hidden>`, page, "approve is hidden once approved")
	resp, _ = c.post("/deployments/"+a.ID.String()+"/reject", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode, "an approved deployment cannot be rejected")

}

// problemAfterLine matches a line of the annotated intent followed by the
// error for path: the error is shown right under the field it names.
func problemAfterLine(line int, path string) *regexp.Regexp {
	return regexp.MustCompile(`(?s)<div class="src bad" id="L` + fmt.Sprint(line) + `">.*?</div>\s*(<div class="field-error" data-path="[^"]*">.*?</div>\s*)*<div class="field-error" data-path="` + regexp.QuoteMeta(path) + `">`)
}

func TestConfigEditor(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	edit := func(form url.Values) (*http.Response, string) {
		if !form.Has("version") {
			form.Set("version", "1")
		}
		return c.post("/clusters/eu-1/configs/prod", form)
	}

	t.Run("invalid JSON", func(t *testing.T) {
		spec := "{\n  \"region\": \"eu-central-1\",\n  \"modules\": {\"vpc\": {}},\n}\n"
		resp, body := edit(url.Values{"spec": {spec}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Contains(t, body, "nothing was saved")
		require.Contains(t, body, "not valid JSON at line 4")
		require.Regexp(t, problemAfterLine(4, ""), body)
		require.Contains(t, body, html.EscapeString(spec), "the text typed is kept")
	})
	t.Run("validation errors next to their fields", func(t *testing.T) {
		spec := "{\n  \"region\": \"eu-central-1\",\n  \"modules\": {\n    \"vpc\": {\n      \"cidr\": \"10.0.0.1/16\",\n      \"az_count\": 9\n    }\n  }\n}"
		resp, body := edit(url.Values{"spec": {spec}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Regexp(t, problemAfterLine(5, "modules.vpc.cidr"), body)
		require.Regexp(t, problemAfterLine(6, "modules.vpc.az_count"), body)
		require.Contains(t, body, `<a href="#L5">line 5</a>: <code class="path">modules.vpc.cidr</code>`)
		require.Contains(t, body, `aria-invalid="true" aria-describedby="problems"`)
	})
	t.Run("bad drift schedule", func(t *testing.T) {
		resp, body := edit(url.Values{"spec": {validIntent}, "drift_schedule": {"every tuesday"}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Regexp(t, `(?s)id="drift_schedule" name="drift_schedule" value="every tuesday" aria-invalid="true" aria-describedby="schedule-error">\s*<p class="field-error" id="schedule-error">not a cron expression`, body)
	})
	require.Equal(t, 1, e.deployment0Version(t), "nothing was saved by the refused edits")

	t.Run("save", func(t *testing.T) {
		resp, body := edit(url.Values{"spec": {`{"modules": {"vpc": {"cidr": "10.1.0.0/16"}}, "region": "eu-west-1"}`}, "require_approval": {"on"}, "drift_schedule": {"@every 6h"}})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
		require.Equal(t, "/clusters/eu-1/configs/prod?saved=2", resp.Header.Get("Location"))
		cfg, err := e.st.GetConfig(e.ctx, "eu-1", "prod")
		require.NoError(t, err)
		require.Equal(t, 2, cfg.Version)
		require.True(t, cfg.RequireApproval)
		require.Equal(t, "@every 6h", *cfg.DriftSchedule)
		require.JSONEq(t, `{"modules": {"vpc": {"cidr": "10.1.0.0/16"}}, "region": "eu-west-1"}`, string(cfg.Spec))
		_, page := c.get("/clusters/eu-1/configs/prod?saved=2")
		require.Contains(t, page, "Saved as version 2.")
		require.Contains(t, page, "Version 2")
		require.Contains(t, page, "Version 1")
	})
	t.Run("stale editor", func(t *testing.T) {
		resp, body := edit(url.Values{"spec": {validIntent}, "version": {"1"}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Contains(t, body, "changed since you opened it (version 1, now 2)")
		require.Equal(t, 2, e.deployment0Version(t))
	})
	t.Run("new config", func(t *testing.T) {
		resp, body := c.post("/clusters/eu-1/configs", url.Values{"name": {"Bad Name"}, "spec": {validIntent}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Contains(t, body, `<p class="field-error" id="name-error">Use 1-63 lowercase`)
		resp, body = c.post("/clusters/eu-1/configs", url.Values{"name": {"prod"}, "spec": {validIntent}})
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		require.Contains(t, body, "A config with this name exists")
		resp, _ = c.post("/clusters/eu-1/configs", url.Values{"name": {"staging"}, "spec": {validIntent}})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/clusters/eu-1/configs/staging?saved=1", resp.Header.Get("Location"))
	})
}

func (e *env) deployment0Version(t *testing.T) int {
	cfg, err := e.st.GetConfig(e.ctx, "eu-1", "prod")
	require.NoError(t, err)
	return cfg.Version
}

// hostileLines are log lines a terraform run can print (resource values).
var hostileLines = []string{
	`<script>window.__pwned = 1</script>`,
	`<img src=x onerror="window.__pwned = 2">`,
	`"quoted" & 'single' </div></div><b>not bold</b>`,
}

func TestLogLinesAreText(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	e.addLines(d.ID, 1, store.StreamStdout, hostileLines...)

	_, page := c.get("/deployments/" + d.ID.String())
	for i, l := range hostileLines {
		require.NotContains(t, page, l)
		require.Regexp(t, fmt.Sprintf(`data-seq="%d" data-t="\d+">%s</div>`, i+1, regexp.QuoteMeta(html.EscapeString(l))), page)
	}
	// The plain-text log is served as text, never sniffed as HTML.
	resp, body := c.do(http.MethodGet, "/deployments/"+d.ID.String()+"/log", nil, nil)
	require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	require.Equal(t, strings.Join(hostileLines, "\n")+"\n", body)

	// The stream carries them as JSON strings with <, > and & escaped; the
	// page's script inserts them as text (checked in the browser test).
	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	lines, _, _ := s.collect(len(hostileLines), 10*time.Second)
	for i, l := range lines {
		require.Equal(t, hostileLines[i], l.Line)
	}
	raw, err := json.Marshal(sseLine{Line: hostileLines[0]})
	require.NoError(t, err)
	require.NotContains(t, string(raw), "<")
}

// TestLiveTerminalStream follows a run over Server-Sent Events: lines that
// arrive while connected, a reconnect with Last-Event-ID in the middle, the
// status events, and the end after the final status with every line sent.
func TestLiveTerminalStream(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	path := "/deployments/" + d.ID.String() + "/events"
	e.addLines(d.ID, 1, store.StreamAgent, "claimed by agent agent-1")

	s := c.events(path, "")
	first, ok := s.next(10 * time.Second)
	require.True(t, ok)
	stored, err := e.st.ReadLogs(e.ctx, d.ID, 0, 1)
	require.NoError(t, err)
	require.Equal(t, sseEvent{ID: "1", Event: "line", Data: fmt.Sprintf(`{"seq":1,"stream":"agent","line":"claimed by agent agent-1","t":%d}`, stored[0].CreatedAt.UnixMilli())}, first)
	// The page renders the same time with each stored line.
	_, page := c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, fmt.Sprintf(`<div class="line st-agent" data-seq="1" data-t="%d">claimed by agent agent-1</div>`, stored[0].CreatedAt.UnixMilli()))
	status, ok := s.next(10 * time.Second)
	require.True(t, ok)
	require.Equal(t, "status", status.Event)
	require.Contains(t, status.Data, `"status":"in_progress"`)

	// Batches written while connected arrive without reconnecting.
	var seq int64 = 1
	batch := func(n int) {
		var ls []string
		for i := 0; i < n; i++ {
			ls = append(ls, fmt.Sprintf("line %d", seq+1+int64(i)))
		}
		e.addLines(d.ID, seq+1, store.StreamStdout, ls...)
		seq += int64(n)
	}
	batch(30)
	batch(30)
	got, _, _ := s.collect(60, 10*time.Second)
	for i, l := range got {
		require.Equal(t, int64(i+2), l.Seq)
		require.Equal(t, fmt.Sprintf("line %d", i+2), l.Line)
	}
	// The connection drops after seq 61; lines keep coming meanwhile.
	s.close()
	batch(700) // more than one read batch
	require.NoError(t, e.st.SetPhase(e.ctx, d.ID, testAgent, store.PhaseApply))

	// EventSource reconnects with the last id it saw; ?after=0 (the page's
	// start) must not win over it.
	s = c.events(path+"?after=0", "61")
	batch(40)
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	got, statuses, ended := s.collect(100000, 20*time.Second)
	require.True(t, ended, "no end event")
	require.Len(t, got, int(seq)-61, "gap or duplicate after resuming")
	for i, l := range got {
		require.Equal(t, int64(62+i), l.Seq)
	}
	last := statuses[len(statuses)-1]
	require.Equal(t, "succeeded", last.Status)
	require.True(t, last.Final)
	require.Equal(t, "done", last.Phase)
	// The progress facts travel with the status, so a page opened early
	// does not end with the blanks it was rendered with.
	fin := e.deployment(d.ID)
	require.Equal(t, 1, last.Attempt)
	require.Equal(t, 3, last.MaxAttempts)
	require.Equal(t, testAgent, last.Agent)
	require.Equal(t, formatTimePtr(fin.StartedAt), last.StartedAt)
	require.Equal(t, formatTimePtr(fin.FinishedAt), last.FinishedAt)
	require.NotEmpty(t, last.StartedAt)
	require.NotEmpty(t, last.FinishedAt)
	_, ok = s.next(5 * time.Second)
	require.False(t, ok, "the server closes the stream after end")

	// A finished deployment: the whole rest of the log, then end at once.
	s = c.events(path+"?after=700", "")
	got, _, ended = s.collect(100000, 10*time.Second)
	require.True(t, ended)
	require.Len(t, got, int(seq)-700)
	require.Eventually(t, func() bool { return e.srv.notifier.Subscribers() == 0 }, 5*time.Second, 10*time.Millisecond, "subscriptions leak")
}

// TestLiveTerminalWithoutListen: with the LISTEN connection down the status
// poll still delivers lines and the end.
func TestLiveTerminalWithoutListen(t *testing.T) {
	var proxy *testsupport.FaultProxy
	e := setup(t, func(o *Options) {
		o.StatusPoll = 50 * time.Millisecond
		// The LISTEN connection goes through a proxy the test cuts.
		u, err := url.Parse(o.ConnString)
		require.NoError(t, err)
		proxy = testsupport.StartFaultProxy(t, u.Host)
		o.ConnString = proxy.URL(o.ConnString)
	})
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	proxy.Down() // as while reconnecting: notifications are lost
	require.Eventually(t, func() bool { return !e.srv.notifier.Alive() }, 10*time.Second, 10*time.Millisecond)
	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	_, err := e.pool.Exec(e.ctx, `ALTER TABLE deployment_logs DISABLE TRIGGER deployment_logs_notify`)
	require.NoError(t, err)
	e.addLines(d.ID, 1, store.StreamStdout, "a", "b", "c")
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusFailed, Kind: store.KindPlan, Error: "plan failed"}))
	got, statuses, ended := s.collect(100, 10*time.Second)
	require.True(t, ended)
	require.Len(t, got, 3)
	require.Equal(t, "plan failed", statuses[len(statuses)-1].Error)
}

func TestDrift(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	sha := strings.Repeat("c0ffee", 6) + "abcd"
	e.applied(e.cfg, sha, time.Now().Add(-3*time.Hour)) // what the checks compared with
	details := `{"resources":[{"address":"module.vpc.aws_vpc.this","action":"update","attributes":["tags","enable_dns_hostnames"]},{"address":"module.vpc.aws_subnet.private[0]","action":"delete"}]}`
	var oldID, latestID uuid.UUID
	require.NoError(t, e.pool.QueryRow(e.ctx, `INSERT INTO drift_reports (config_id, cluster_id, checked_at, status, commit_sha, duration_ms, details)
VALUES ($1, 'eu-1', now() - interval '2 hours', 'in_sync', $2, 9000, '{}') RETURNING id`, e.cfg.ID, sha).Scan(&oldID))
	require.NoError(t, e.pool.QueryRow(e.ctx, `INSERT INTO drift_reports (config_id, cluster_id, checked_at, status, commit_sha, duration_ms, details)
VALUES ($1, 'eu-1', now() - interval '1 hour', 'drifted', $2, 11000, $3) RETURNING id`, e.cfg.ID, sha, details).Scan(&latestID))
	clean := e.newConfig("clean")
	var cleanID uuid.UUID
	require.NoError(t, e.pool.QueryRow(e.ctx, `INSERT INTO drift_reports (config_id, cluster_id, status, commit_sha) VALUES ($1, 'eu-1', 'in_sync', $2) RETURNING id`, clean.ID, sha).Scan(&cleanID))

	// A report with values shows them old → new, sensitive ones masked.
	valued := e.newConfig("valued")
	withValues := `{"resources":[{"address":"aws_vpc.main","action":"update","attributes":["tags"],"sensitive_changed":true,"changes":[` +
		`{"path":"tags.team","action":"change","old":"blue","new":"<i>green</i>"},{"path":"password","action":"change","old":null,"new":null,"sensitive":true}]}]}`
	_, err := e.pool.Exec(e.ctx, `INSERT INTO drift_reports (config_id, cluster_id, status, commit_sha, details) VALUES ($1, 'eu-1', 'drifted', $2, $3)`, valued.ID, sha, withValues)
	require.NoError(t, err)

	_, page := c.get("/drift")
	require.Contains(t, html.UnescapeString(page), `<code>aws_vpc.main</code><div class="scroll"><table class="diff"><tbody>`+
		`<tr><td class="sym">~</td><td><code>tags.team</code></td><td><code>"blue" → "<i>green</i>"</code></td></tr>`+
		`<tr><td class="sym">~</td><td><code>password</code></td><td><code>(sensitive value)</code></td></tr></tbody></table></div></li>`)
	require.NotContains(t, page, "<i>green", "a drifted value became markup")
	require.Contains(t, page, `<span class="status s-drifted">drifted</span>`)
	require.Contains(t, page, `<span class="act act-update">update</span> <code>module.vpc.aws_vpc.this</code> <span class="hint">(tags, enable_dns_hostnames)</span>`)
	require.Contains(t, page, `<code>module.vpc.aws_subnet.private[0]</code>`)
	require.Contains(t, page, `href="https://git.example.com/infra/commit/`+sha+`"`)
	require.Contains(t, page, `action="/drift/`+latestID.String()+`/remediate"`)
	require.NotContains(t, page, oldID.String(), "only the latest report per config")
	require.NotContains(t, page, cleanID.String()+"/remediate", "nothing to remediate when in sync")
	require.Less(t, strings.Index(page, "eu-1/prod"), strings.Index(page, "eu-1/clean"), "drifted configs first")
	_, page = c.get("/clusters/eu-1/configs/prod")
	require.Contains(t, page, `<span class="status s-drifted">drifted</span>`)

	for _, id := range []uuid.UUID{oldID, cleanID} {
		resp, body := c.post("/drift/"+id.String()+"/remediate", nil)
		require.Equal(t, http.StatusConflict, resp.StatusCode)
		require.Contains(t, body, "Not remediated: it is in_sync: only a report that found drift can be remediated.")
	}
	resp, body := c.post("/drift/"+latestID.String()+"/remediate", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	d := e.deployment(uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/")))
	require.Equal(t, store.ActionApply, d.Action)
	require.Equal(t, sha, *d.SourceCommit)
	require.Equal(t, e.cfg.ID, d.ConfigID)
	// A user's request is recorded as the user (the database's trigger).
	require.Equal(t, "token", d.RequestedBy)

	// Once the config was deployed after the check, its report is stale.
	run, err := e.st.Claim(e.ctx, "eu-1", testAgent, time.Minute)
	require.NoError(t, err)
	require.Equal(t, d.ID, run.ID)
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	resp, body = c.post("/drift/"+latestID.String()+"/remediate", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "deployed after this drift check")
	// …and the page says so instead of offering a button that leads there.
	_, page = c.get("/drift")
	require.NotContains(t, page, `action="/drift/`+latestID.String()+`/remediate"`)
	require.Contains(t, page, `<div class="hint superseded">as of this check; deployed since by <a href="/deployments/`+d.ID.String()+`">`)
	require.Contains(t, page, `<p class="hint not-remediable">Not remediable: the config was deployed after this drift check (deployment `+d.ID.String()+`): run a new drift check first.</p>`)
	_, page = c.get("/clusters/eu-1/configs/prod")
	require.Contains(t, page, `<span class="hint">(deployed since)</span>`)
}

func TestStaticAssets(t *testing.T) {
	e := setup(t)
	c := e.client()
	resp, js := c.do(http.MethodGet, "/static/portal.js", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/javascript; charset=utf-8", resp.Header.Get("Content-Type"))
	securityHeaders(t, resp.Header, "portal.js")
	// The script must never turn text into markup.
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		require.NotContains(t, js, sink)
	}
	resp, _ = c.do(http.MethodGet, "/static/portal.js", nil, http.Header{"If-None-Match": {resp.Header.Get("ETag")}})
	require.Equal(t, http.StatusNotModified, resp.StatusCode)
	resp, _ = c.do(http.MethodGet, "/static/portal.css", nil, nil)
	require.Equal(t, "text/css; charset=utf-8", resp.Header.Get("Content-Type"))
}

func TestNewRefusesBadOptions(t *testing.T) {
	st := store.New(nil)
	ok := Options{Store: st, ConnString: "postgres://x", Auth: Auth{Token: "t", TokenUser: testTokenUser}}
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no auth", func(o *Options) { o.Auth = Auth{} }, "no sign-in method"},
		{"commit URL without placeholder", func(o *Options) { o.CommitURL = "https://git.example.com/commit/" }, "no {sha}"},
		{"commit URL with javascript scheme", func(o *Options) { o.CommitURL = "javascript:alert('{sha}')" }, "not an http(s) URL"},
		{"no store", func(o *Options) { o.Store = nil }, "store is required"},
		{"token without a user", func(o *Options) { o.Auth.TokenUser = uuid.Nil }, "set --token-user UUID"},
		{"users without ids", func(o *Options) {
			o.Auth.Users = map[string]User{"zed": {Hash: testHash()}, "bob": {Hash: testHash()}, "ok": {Hash: testHash(), ID: testAliceID}}
		}, "users file: bob, zed: no user id"},
	}
	for _, c := range cases {
		o := ok
		c.mod(&o)
		_, err := New(o)
		require.ErrorContains(t, err, c.want, c.name)
	}
	// The legacy mode needs no ids: every sign-in is the owner.
	o := ok
	o.Auth.TokenUser, o.ActAsOwner, o.CommitURL = uuid.Nil, true, "https://git.example.com/commit/"
	_, err := New(o)
	require.ErrorContains(t, err, "no {sha}", "past the identity check")
}

// TestPrunedLogIsSaid: a deployment whose log was pruned says so on its
// page and in the plain-text log, and shows the engine that ran it.
func TestPrunedLogIsSaid(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	require.NoError(t, e.st.SetEngine(e.ctx, d.ID, testAgent, "opentofu", "1.10.10"))
	e.addLines(d.ID, 1, store.StreamStdout, "Apply complete!")
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	res, err := e.st.Prune(e.ctx, store.PruneOptions{LogsBefore: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.LogLines)

	_, page := c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, `id="log-pruned">This log was pruned on`)
	require.Contains(t, page, "<dt>Engine</dt><dd>opentofu 1.10.10</dd>")
	require.NotContains(t, page, "Apply complete!")
	_, body := c.do(http.MethodGet, "/deployments/"+d.ID.String()+"/log", nil, nil)
	require.True(t, strings.HasPrefix(body, "[grape] this log was pruned at "), body)
}

// TestQueuedPageSaysWhatItWaitsFor: a run queued behind a parked approval
// names it on its page, with when it expires.
func TestQueuedPageSaysWhatItWaitsFor(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	parked := e.awaitingApproval(e.cfg)
	queued := e.enqueue(e.cfg, store.EnqueueParams{})
	_, page := c.get("/deployments/" + queued.ID.String())
	require.Contains(t, page, `id="waits-for" data-show="queued">Queued: waiting for deployment `+parked.ID.String()+", which has awaited approval for")
	require.Contains(t, page, "it expires at")
	require.Contains(t, html.UnescapeString(page), `<p class="hint" id="queue-place" data-show="queued">Queued: next in its config's queue; 1 agent of cluster eu-1 online.</p>`)
	second := e.enqueue(e.cfg, store.EnqueueParams{})
	_, page = c.get("/deployments/" + second.ID.String())
	require.Contains(t, html.UnescapeString(page), "Queued: 2nd in its config's queue")
	_, err := e.pool.Exec(e.ctx, `UPDATE agents SET last_heartbeat_at = now() - interval '5 minutes'`)
	require.NoError(t, err)
	_, page = c.get("/deployments/" + second.ID.String())
	require.Contains(t, page, "; no agent of cluster eu-1 is online: it runs when one starts.</p>")
	_, page = c.get("/deployments/" + parked.ID.String())
	require.NotContains(t, page, `id="waits-for"`)
	require.NotContains(t, page, `id="queue-place"`)
	// Behind a running deployment of its config.
	busy := e.newConfig("busy")
	run := e.running(busy, store.EnqueueParams{})
	next := e.enqueue(busy, store.EnqueueParams{})
	_, page = c.get("/deployments/" + next.ID.String())
	require.Contains(t, html.UnescapeString(page), `Queued: next in its config's queue;`)
	require.Contains(t, page, ` Running now: <a href="/deployments/`+run.ID.String()+`">apply of busy</a> on `+testAgent+`.</p>`)
	require.Contains(t, page, `id="waits-for" data-show="queued">Queued: waiting for deployment `+run.ID.String()+` (in_progress, apply)`)
}

func TestQueuePlace(t *testing.T) {
	for n, want := range map[int]string{1: "next", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd", 101: "101st", 111: "111th"} {
		got := queueView{Position: n}.Place()
		require.True(t, strings.HasPrefix(got, want+" "), "%d: %s", n, got)
	}
}

// TestApprovalPageShowsTheDiff: the person asked to approve reads every
// changed attribute, old → new, above the button, and nothing sensitive.
func TestApprovalPageShowsTheDiff(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{RequireApproval: true})

	// Before the plan stored a diff the section is hidden, not empty.
	_, page := c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, `<section id="diff" aria-labelledby="diff-h" data-show="diff" hidden>`)

	diff := plandiff.Diff{
		Resources: []plandiff.Resource{
			{Address: "module.vpc.aws_vpc.this[0]", Action: "update", Attributes: []plandiff.Attribute{
				{Path: "tags.team", Action: "change", Old: "blue", New: "green"},
				{Path: "tags.note", Action: "add", New: "<script>window.__pwned=1</script>"},
				{Path: "enable_dns_support", Action: "change", Old: true, New: false},
			}},
			{Address: "aws_db_instance.main", Action: "replace", Reason: "replace_because_cannot_update", Attributes: []plandiff.Attribute{
				{Path: "password", Action: "change", Sensitive: true},
				{Path: "engine_version", Action: "change", Old: "15.4", New: "16.1", ForcesReplacement: true},
				{Path: "endpoint", Action: "change", Old: "db.internal:5432", Unknown: true},
				{Path: "arn", Action: "add", Unknown: true},
			}},
		},
		Drift: []plandiff.Resource{{Address: "aws_subnet.a", Action: "update", Attributes: []plandiff.Attribute{{Path: "map_public_ip_on_launch", Action: "change", Old: false, New: true}}}},
	}
	require.NoError(t, e.st.SetPlanDiff(e.ctx, d.ID, testAgent, diff))
	require.NoError(t, e.st.AwaitApproval(e.ctx, d.ID, testAgent))
	_, page = c.get("/deployments/" + d.ID.String())
	text := html.UnescapeString(page)
	for _, want := range []string{
		`<summary><span class="act act-update">update</span> <code>module.vpc.aws_vpc.this[0]</code></summary>`,
		`<td class="sym">~</td><td><code>tags.team</code></td><td><code>"blue" → "green"</code></td>`,
		`<td class="sym">+</td><td><code>tags.note</code></td><td><code>"<script>window.__pwned=1</script>"</code></td>`,
		`<code>true → false</code>`,
		`<span class="hint">replace because cannot update</span>`,
		`<td><code>password</code></td><td><code>(sensitive value)</code></td>`,
		`<code>"15.4" → "16.1"</code> <span class="hint"># forces replacement</span>`,
		`<code>"db.internal:5432" → (known after apply)</code>`,
		`<td><code>arn</code></td><td><code>(known after apply)</code></td>`,
		`Changed outside of Terraform:`,
		`<code>false → true</code>`,
	} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, page, "<script>window", "a value became markup")
	require.Less(t, strings.Index(page, "tags.team"), strings.Index(page, "Approve and apply"), "the diff is below the button")
	require.Contains(t, page, `<details class="diff-res" open>`)

	// The live status carries the same diff.
	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	ev, ok := s.next(10 * time.Second)
	require.True(t, ok)
	require.Equal(t, "status", ev.Event)
	var st deploymentState
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &st))
	got := st.Diff
	require.NotNil(t, got)
	require.Len(t, got.Resources, 2)
	require.Equal(t, diffAttr{Symbol: "~", Path: "tags.team", Old: `"blue"`, New: `"green"`}, got.Resources[0].Attributes[0])
	require.Equal(t, diffAttr{Symbol: "~", Path: "password", New: "(sensitive value)"}, got.Resources[1].Attributes[0])
	s.close()

	// A no-op plan says so, as terraform does.
	noop := e.running(e.newConfig("noop"), store.EnqueueParams{})
	require.NoError(t, e.st.SetPlanDiff(e.ctx, noop.ID, testAgent, plandiff.Diff{}))
	_, page = c.get("/deployments/" + noop.ID.String())
	require.Contains(t, page, "No changes. Your infrastructure matches the configuration.")
}

// TestRetry: a failed or cancelled run offers Retry, which queues the same
// action for the same config (and commit) again; the error shows whole.
func TestRetry(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	sha := strings.Repeat("ab", 20)
	// A failed remediation: an apply of the last applied commit.
	e.applied(e.cfg, sha, time.Now().Add(-time.Hour))
	d := e.running(e.cfg, store.EnqueueParams{Action: store.ActionApply, SourceCommit: &sha, RequireApproval: true})
	long := "terraform apply failed: creating EC2 Subnet: operation error EC2: CreateSubnet, https response error StatusCode: 400, RequestID: 5a8e6f1c, api error InvalidParameterValue: Value (eu-west-1z) for parameter availabilityZone is invalid. " + strings.Repeat("Subnets can only be created in eu-west-1a, eu-west-1b and eu-west-1c. ", 6)
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusFailed, Kind: store.KindApply, Error: long}))
	_, page := c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, `<dd data-field="error" class="error">`+html.EscapeString(long)+`</dd>`)
	require.Contains(t, page, `action="/deployments/`+d.ID.String()+`/retry" data-show="can_retry">`)

	resp, body := c.post("/deployments/"+d.ID.String()+"/retry", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	again := e.deployment(uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/")))
	require.NotEqual(t, d.ID, again.ID)
	require.Equal(t, store.StatusQueued, again.Status)
	require.Equal(t, store.ActionApply, again.Action)
	require.Equal(t, e.cfg.ID, again.ConfigID)
	require.Equal(t, sha, *again.SourceCommit)
	require.True(t, again.RequireApproval)
	require.Equal(t, "token", again.RequestedBy)

	// Not offered, and refused, while a run is queued or after success.
	_, page = c.get("/deployments/" + again.ID.String())
	require.Contains(t, page, `/retry" data-show="can_retry" hidden>`)
	resp, body = c.post("/deployments/"+again.ID.String()+"/retry", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "only a failed or cancelled run can be retried")

	resp, _ = c.post("/deployments/"+again.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	// Once another commit was applied, retrying the old remediation would
	// roll it back: the database refuses (grape_queue_at_commit).
	e.applied(e.cfg, strings.Repeat("cd", 20), time.Now())
	resp, body = c.post("/deployments/"+d.ID.String()+"/retry", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "is not config prod's last applied commit")

	// A cancelled destroy is retried only with the name typed again.
	other := e.newConfig("doomed")
	x := e.enqueue(other, store.EnqueueParams{Action: store.ActionDestroy})
	resp, _ = c.post("/deployments/"+x.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, page = c.get("/deployments/" + x.ID.String())
	require.Contains(t, page, `<input id="retry-confirm" name="confirm" autocomplete="off" required>`)
	resp, body = c.post("/deployments/"+x.ID.String()+"/retry", url.Values{"confirm": {"prod"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	// The deployment page again, with the message at the form.
	require.Contains(t, html.UnescapeString(body), `<p class="message error" id="retry-error" role="alert">"prod" is not the config's name: type doomed exactly to destroy again.</p>`)
	require.Contains(t, body, `<input id="retry-confirm" name="confirm" autocomplete="off" required aria-invalid="true" aria-describedby="retry-error" autofocus>`)
	require.Contains(t, body, `id="terminal"`)
	resp, _ = c.post("/deployments/"+x.ID.String()+"/retry", url.Values{"confirm": {"doomed"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	again = e.deployment(uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/")))
	require.Equal(t, store.ActionDestroy, again.Action)
	require.Equal(t, other.ID, again.ConfigID)
}

// TestOutputsShown: after an apply the page lists the outputs, a sensitive
// one masked, and the live status carries them.
func TestOutputsShown(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	_, page := c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, `<ul data-field="outputs" class="outputs"></ul>`)
	require.NoError(t, e.st.SetOutputs(e.ctx, d.ID, testAgent, map[string]any{
		"vpc_id":      map[string]any{"sensitive": false, "value": "vpc-0abc"},
		"subnet_ids":  map[string]any{"sensitive": false, "value": []string{"subnet-1", "subnet-2"}},
		"db_password": map[string]any{"sensitive": true, "value": "(sensitive)"},
		"note":        map[string]any{"sensitive": false, "value": "<b>bold</b>"},
	}))
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	_, page = c.get("/deployments/" + d.ID.String())
	require.Contains(t, html.UnescapeString(page), `<ul data-field="outputs" class="outputs">`+
		`<li><code>db_password</code> = <code class="sensitive">(sensitive value)</code></li>`+
		`<li><code>note</code> = <code>"<b>bold</b>"</code></li>`+
		`<li><code>subnet_ids</code> = <code>["subnet-1","subnet-2"]</code></li>`+
		`<li><code>vpc_id</code> = <code>"vpc-0abc"</code></li></ul>`)
	require.NotContains(t, page, "<b>bold</b>", "an output value became markup")

	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	ev, ok := s.next(10 * time.Second)
	require.True(t, ok)
	require.Equal(t, "status", ev.Event)
	var st deploymentState
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &st))
	require.Equal(t, []outputView{
		{Name: "db_password", Value: "(sensitive value)", Sensitive: true},
		{Name: "note", Value: `"<b>bold</b>"`},
		{Name: "subnet_ids", Value: `["subnet-1","subnet-2"]`},
		{Name: "vpc_id", Value: `"vpc-0abc"`},
	}, st.Outputs)
}

// TestCheckNow: "Check now" queues a drift check of the last applied
// commit, and a finished check that found drift shows "drifted", not a
// green "succeeded".
func TestCheckNow(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	_, page := c.get("/drift")
	require.Contains(t, page, `action="/clusters/eu-1/configs/prod/drift-check"`)
	resp, body := c.post("/clusters/eu-1/configs/prod/drift-check", nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "Config prod was never applied: there is no commit to check for drift.")

	sha := strings.Repeat("5eed", 10)
	a := e.running(e.cfg, store.EnqueueParams{})
	require.NoError(t, e.st.SetCommit(e.ctx, a.ID, testAgent, sha))
	require.NoError(t, e.st.Finish(e.ctx, a.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	_, page = c.get("/clusters/eu-1/configs/prod")
	require.Contains(t, page, `action="/clusters/eu-1/configs/prod/drift-check"`)
	resp, body = c.post("/clusters/eu-1/configs/prod/drift-check", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	d := e.deployment(uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/")))
	require.Equal(t, store.ActionDrift, d.Action)
	require.Equal(t, sha, *d.SourceCommit)
	require.Equal(t, 1, d.MaxAttempts)
	require.Equal(t, "token", d.RequestedBy)

	// The agent runs it and finds drift.
	run, err := e.st.Claim(e.ctx, "eu-1", testAgent, time.Minute)
	require.NoError(t, err)
	require.Equal(t, d.ID, run.ID)
	_, err = e.st.InsertDriftReport(e.ctx, store.DriftReport{ConfigID: e.cfg.ID, ClusterID: "eu-1", DeploymentID: &d.ID, Status: store.DriftDrifted, CommitSHA: &sha})
	require.NoError(t, err)
	require.NoError(t, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	_, page = c.get("/deployments/" + d.ID.String())
	require.Contains(t, page, `<span data-field="status" class="status s-drifted">drifted</span>`)
	require.Contains(t, page, `<span data-show="drift_status" class="hint">drift check succeeded</span>`)
	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	_, statuses, ended := s.collect(100000, 10*time.Second)
	require.True(t, ended)
	require.Equal(t, "drifted", statuses[len(statuses)-1].DriftStatus)

	// Lists show it as checked, not as a green "succeeded".
	_, page = c.get("/deployments")
	require.Regexp(t, `(?s)<a href="/deployments/`+d.ID.String()+`">.*?<span class="status s-checked">checked</span>`, page)
	require.NotRegexp(t, `(?s)<a href="/deployments/`+d.ID.String()+`">[^\n]*\n(?:[^\n]*\n){0,3}[^\n]*s-succeeded`, page)

	// An apply's page is unchanged.
	_, page = c.get("/deployments/" + a.ID.String())
	require.Contains(t, page, `<span data-field="status" class="status s-succeeded">succeeded</span>`)
	require.Contains(t, page, `<span data-show="drift_status" class="hint" hidden>`)
}

// A queued deployment whose config's state is held by an offline agent says
// so on its page, and stops saying so once the holder is back.
func TestDeploymentWaitingForStateHolder(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	held := e.newConfig("held")
	_, err := e.st.RecordStateHolder(e.ctx, "eu-1", held.ID, uuid.New(), "agent-far")
	require.NoError(t, err)
	require.NoError(t, e.st.RegisterAgent(e.ctx, store.Agent{ID: "agent-far", ClusterID: "eu-1"}))
	_, err = e.pool.Exec(e.ctx, `UPDATE agents SET last_heartbeat_at = now() - interval '10 minutes' WHERE id = 'agent-far'`)
	require.NoError(t, err)
	d := e.enqueue(held, store.EnqueueParams{})

	_, body := c.get("/deployments/" + d.ID.String())
	require.Contains(t, body, `data-field="waiting" class="hint">waiting for agent agent-far, which holds this config&#39;s state; last seen `)

	require.NoError(t, e.st.AgentHeartbeat(e.ctx, "agent-far"))
	_, body = c.get("/deployments/" + d.ID.String())
	require.Contains(t, body, `data-field="waiting" class="hint"></dd>`)
}
