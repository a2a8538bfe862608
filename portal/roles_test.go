package portal

import (
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/store"
)

// Users-file sign-ins with a role each (given in roleSetup): the portal acts
// as them, so the database's rules decide what they see and may do.
var (
	veraViewer    = uuid.MustParse("11111111-0000-4000-8000-00000000000a")
	ottoOperator  = uuid.MustParse("22222222-0000-4000-8000-00000000000b")
	aprilApprover = uuid.MustParse("33333333-0000-4000-8000-00000000000c")
	abeApprover   = uuid.MustParse("44444444-0000-4000-8000-00000000000d")
	olgaOutsider  = uuid.MustParse("55555555-0000-4000-8000-00000000000e") // of cluster us-2 only
)

func roleSetup(t *testing.T) *env {
	t.Helper()
	e := setup(t, func(o *Options) {
		for name, id := range map[string]uuid.UUID{"vera": veraViewer, "otto": ottoOperator, "april": aprilApprover, "abe": abeApprover, "olga": olgaOutsider} {
			o.Auth.Users[name] = User{Hash: testHash(), ID: id}
		}
	})
	for id, role := range map[uuid.UUID]store.Role{veraViewer: store.RoleViewer, ottoOperator: store.RoleOperator,
		aprilApprover: store.RoleApprover, abeApprover: store.RoleApprover} {
		_, err := e.st.SetMember(e.ctx, "eu-1", id, role)
		require.NoError(t, err)
	}
	_, err := e.st.CreateCluster(e.ctx, "us-2", "another team's")
	require.NoError(t, err)
	_, err = e.st.SetMember(e.ctx, "us-2", olgaOutsider, store.RoleAdmin)
	require.NoError(t, err)
	return e
}

// signInAs signs a users-file user in.
func (e *env) signInAs(name string) *client {
	e.t.Helper()
	c := e.client()
	resp, body := c.login(url.Values{"username": {name}, "password": {testPassword}})
	require.Equal(e.t, http.StatusSeeOther, resp.StatusCode, body)
	status, page := c.get("/")
	require.Equal(e.t, http.StatusOK, status)
	c.csrf = csrfFrom(e.t, page)
	return c
}

// approvalConfig is a config of eu-1 whose applies wait for approval.
func (e *env) approvalConfig(name string) store.Config {
	e.t.Helper()
	c, err := e.st.UpsertConfig(e.ctx, "eu-1", name, json.RawMessage(validIntent), store.ConfigSettings{RequireApproval: ptr.To(true)})
	require.NoError(e.t, err)
	return c
}

// park claims the deployment id and parks it awaiting approval, as the
// agent does after its plan.
func (e *env) park(id uuid.UUID) {
	e.t.Helper()
	_, err := e.st.ClaimByID(e.ctx, id, testAgent, time.Minute)
	require.NoError(e.t, err)
	require.NoError(e.t, e.st.AwaitApproval(e.ctx, id, testAgent))
}

func queuedID(t *testing.T, resp *http.Response) uuid.UUID {
	t.Helper()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	return uuid.MustParse(strings.TrimPrefix(resp.Header.Get("Location"), "/deployments/"))
}

// TestRolesInThePortal: each role sees the buttons its role allows and no
// more, and the database refuses the rest with a reason the page shows.
func TestRolesInThePortal(t *testing.T) {
	e := roleSetup(t)
	vera, otto, april, abe := e.signInAs("vera"), e.signInAs("otto"), e.signInAs("april"), e.signInAs("abe")
	sha := strings.Repeat("e1", 20)
	e.applied(e.cfg, sha, time.Now().Add(-time.Hour))

	buttons := []string{`value="plan">Plan</button>`, `value="apply" class="primary">Deploy</button>`, `>Queue destroy</button>`, `>Check now</button>`}
	_, page := vera.get("/clusters/eu-1/configs/prod")
	for _, b := range buttons {
		require.NotContains(t, page, b, "a viewer sees no run buttons")
	}
	require.NotContains(t, page, `/edit">Edit</a>`)
	require.Contains(t, page, "Your role on cluster eu-1 is viewer")
	_, page = otto.get("/clusters/eu-1/configs/prod")
	for _, b := range buttons {
		require.Contains(t, page, b, "an operator runs")
	}
	require.NotContains(t, page, `/edit">Edit</a>`, "only admins edit")
	_, page = e.signedIn().get("/clusters/eu-1/configs/prod")
	require.Contains(t, page, `/edit">Edit</a>`, "the token's user is an admin")

	// The database refuses what a page does not offer, and says why.
	resp, body := vera.post("/clusters/eu-1/configs/prod/deployments", url.Values{"action": {"plan"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "needs the operator, approver or admin role")
	resp, _ = vera.post("/clusters/eu-1/configs/prod/drift-check", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, body = otto.post("/clusters/eu-1/configs/prod", url.Values{"spec": {validIntent}, "version": {"1"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "an operator cannot edit")
	require.Contains(t, html.UnescapeString(body), "needs the admin role")
	for _, p := range []string{"/clusters/eu-1/configs/prod/edit", "/clusters/eu-1/new-config"} {
		code, body := otto.get(p)
		require.Equal(t, http.StatusForbidden, code, p)
		require.Contains(t, body, "needs the admin role; yours is operator", p)
	}

	// An operator queues (recorded as who they are) and checks for drift.
	e.approvalConfig("gated")
	id := queuedID(t, func() *http.Response {
		resp, _ := otto.post("/clusters/eu-1/configs/gated/deployments", url.Values{"action": {"apply"}})
		return resp
	}())
	require.Equal(t, "otto", e.deployment(id).RequestedBy)
	check := queuedID(t, func() *http.Response {
		resp, _ := otto.post("/clusters/eu-1/configs/prod/drift-check", nil)
		return resp
	}())
	require.Equal(t, sha, ptr.Deref(e.deployment(check).SourceCommit))
	resp, _ = otto.post("/deployments/"+check.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	e.park(id)
	_, page = vera.get("/deployments/" + id.String())
	require.Contains(t, page, `data-show="can_approve" hidden>`, "a viewer: no approve")
	require.Contains(t, page, `data-show="can_cancel" hidden>`, "a viewer: no cancel")
	_, page = otto.get("/deployments/" + id.String())
	require.Contains(t, page, `data-show="can_approve" hidden>`, "an operator: no approve")
	require.Regexp(t, `/cancel" data-show="can_cancel">`, page, "an operator cancels")
	_, page = april.get("/deployments/" + id.String())
	require.Regexp(t, `class="review" data-show="can_approve">`, page)

	resp, body = vera.post("/deployments/"+id.String()+"/cancel", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "your role on its cluster (viewer) does not allow it")
	resp, body = otto.post("/deployments/"+id.String()+"/approve", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "approving needs the approver or admin role on cluster eu-1")
	require.Nil(t, e.deployment(id).ApprovedAt)

	// Four eyes (on for clusters created since 0008): an approver cannot
	// approve their own request; another approver can.
	own := queuedID(t, func() *http.Response {
		resp, _ := april.post("/clusters/eu-1/configs/gated/deployments", url.Values{"action": {"apply"}})
		return resp
	}())
	resp, _ = april.post("/deployments/"+id.String()+"/approve", url.Values{"comment": {"otto's, fine"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "april approves otto's")
	d := e.deployment(id)
	require.Equal(t, "april", ptr.Deref(d.ApprovedBy))
	var uid uuid.UUID
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT approved_by_uid FROM deployments WHERE id = $1`, id).Scan(&uid))
	require.Equal(t, aprilApprover, uid, "the database records who by id")
	require.NoError(t, e.st.Finish(e.ctx, id, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	e.park(own)
	resp, body = april.post("/deployments/"+own.String()+"/approve", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "april requested this deployment and cannot also approve it (four eyes)")
	resp, _ = abe.post("/deployments/"+own.String()+"/approve", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "abe", ptr.Deref(e.deployment(own).ApprovedBy))

	// The audit trail names the users by id.
	evs, err := e.st.ListAudit(e.ctx, store.AuditFilter{TargetID: own.String()})
	require.NoError(t, err)
	var actors []string
	for _, ev := range evs {
		actors = append(actors, ev.Action+" "+ev.Actor)
	}
	require.Equal(t, []string{"deployment.queued " + aprilApprover.String(), "deployment.approved " + abeApprover.String()}, actors)
}

// TestOutsiderSeesNothing: a user of another cluster, signed in by a users
// file or by a Supabase bearer token, sees none of eu-1 on any route.
func TestOutsiderSeesNothing(t *testing.T) {
	e := roleSetup(t)
	q := e.enqueue(e.newConfig("secret"), store.EnqueueParams{})
	e.addLines(q.ID, 1, store.StreamStdout, "eu-1's own line")
	olga := e.signInAs("olga")

	now := time.Now()
	claims := userClaims(now)
	claims["sub"], claims["email"] = olgaOutsider.String(), "olga@example.com"
	bearer := signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, claims)
	get := func(path string) (int, string) {
		resp, body := olga.do(http.MethodGet, path, nil, http.Header{"Authorization": {"Bearer " + bearer}, "Cookie": nil})
		return resp.StatusCode, body
	}
	for name, g := range map[string]func(string) (int, string){"users file": olga.get, "bearer": get} {
		code, page := g("/")
		require.Equal(t, http.StatusOK, code, name)
		require.Contains(t, page, "us-2", name)
		require.NotContains(t, page, "eu-1", name)
		for _, p := range []string{"/clusters/eu-1", "/clusters/eu-1/configs/prod", "/deployments/" + q.ID.String(),
			"/deployments/" + q.ID.String() + "/log", "/deployments/" + q.ID.String() + "/events"} {
			code, body := g(p)
			require.Equal(t, http.StatusNotFound, code, "%s: %s", name, p)
			require.NotContains(t, body, "eu-1's own line", "%s: %s", name, p)
		}
		for _, p := range []string{"/deployments", "/drift", "/audit"} {
			code, page := g(p)
			require.Equal(t, http.StatusOK, code, "%s: %s", name, p)
			require.NotContains(t, page, "eu-1", "%s: %s", name, p)
			require.NotContains(t, page, q.ID.String(), "%s: %s", name, p)
		}
	}
	// A user with no role at all is told which id to give one.
	_, err := e.st.CreateCluster(e.ctx, "us-3", "")
	require.NoError(t, err)
	require.NoError(t, e.st.RemoveMember(e.ctx, "us-2", olgaOutsider))
	_, page := olga.get("/")
	require.Contains(t, page, "You have no role on any cluster yet")
	require.Contains(t, page, "--user "+olgaOutsider.String())

	resp, _ := olga.post("/deployments/"+q.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.ts.URL+"/deployments/"+q.ID.String()+"/cancel", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+bearer)
	bresp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	bresp.Body.Close()
	require.Equal(t, http.StatusNotFound, bresp.StatusCode)
	require.Equal(t, store.StatusQueued, e.deployment(q.ID).Status, "nothing happened")
}
