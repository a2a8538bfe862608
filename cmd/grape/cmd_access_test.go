package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/user"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/webhook"
)

// TestMembersFourEyesAndAudit: the access commands, and four eyes as the CLI
// meets it.
func TestMembersFourEyesAndAudit(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	id := uniqueClusterID("acc")
	c.ok("cluster", "create", id, "--no-agent-role")
	alice, bob := uuid.NewString(), uuid.NewString()
	require.Equal(t, alice+" is operator of cluster "+id, c.ok("member", "add", "--cluster", id, "--user", alice, "--role", "operator"))
	c.ok("member", "add", "--cluster", id, "--user", bob, "--role", "viewer")
	require.Equal(t, alice+" is approver of cluster "+id, c.ok("member", "add", "--cluster", id, "--user", alice, "--role", "approver"))
	var ms []store.Membership
	require.NoError(t, json.Unmarshal([]byte(c.ok("member", "list", "--cluster", id, "--json")), &ms))
	require.Len(t, ms, 2)
	require.Equal(t, store.RoleApprover, ms[0].Role, "highest role first")
	rows := strings.Split(c.ok("member", "list", "--cluster", id), "\n")
	require.Len(t, rows, 3, "a header and a row per member")
	require.Equal(t, []string{"CLUSTER", "USER", "ROLE", "ADDED", "BY"}, strings.Fields(rows[0]))
	require.Equal(t, []string{id, alice, "approver"}, strings.Fields(rows[1])[:3])
	_, errOut, code := c.run("", "member", "list", id)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "member list takes no arguments")
	c.ok("member", "remove", "--cluster", id, "--user", bob)
	_, errOut, code = c.run("", "member", "remove", "--cluster", id, "--user", bob)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such member")
	_, errOut, code = c.run("", "member", "add", "--cluster", id, "--user", bob, "--role", "root")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "use viewer, operator, approver or admin")
	_, errOut, code = c.run("", "member", "add", "--cluster", id, "--user", "bob", "--role", "viewer")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--user: want a UUID")

	// Four eyes, on for a new cluster.
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	cfg, err := st.UpsertConfig(ctx, id, "web", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: id, ConfigID: cfg.ID, RequireApproval: true, RequestedBy: "alice@host"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, id, "agent", 60e9)
	require.NoError(t, err)
	require.NoError(t, st.AwaitApproval(ctx, d.ID, "agent"))
	_, errOut, code = c.run("", "approve", d.ID.String(), "--as", "alice@host")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "alice@host requested this deployment and cannot also approve it (four eyes)")
	require.Contains(t, c.ok("cluster", "set", id, "--four-eyes", "off"), "four eyes off")
	require.Contains(t, c.ok("approve", d.ID.String(), "--as", "alice@host"), "awaiting_approval")
	_, errOut, code = c.run("", "cluster", "set", id, "--four-eyes", "maybe")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "want on or off")

	var evs []store.AuditEvent
	require.NoError(t, json.Unmarshal([]byte(c.ok("audit", "--cluster", id, "--since", "1h", "--json")), &evs))
	u, err := user.Current()
	require.NoError(t, err)
	var got []string
	for _, e := range evs {
		got = append(got, e.Action+" "+e.Actor)
	}
	cliActor := "cli:" + u.Username
	require.Equal(t, []string{
		"cluster.created " + cliActor,
		"membership.added " + cliActor,
		"membership.added " + cliActor,
		"membership.changed " + cliActor,
		"membership.removed " + cliActor,
		"config.created " + loginRole(t),
		"deployment.queued alice@host",
		"cluster.changed " + cliActor,
		"deployment.approved alice@host",
	}, got)
	out := c.ok("notify", "add", "--cluster", id, "--url", "https://hooks.example.com/grape", "--events", "deployment.failed,drift.detected")
	require.Regexp(t, `secret: [A-Za-z0-9_-]{43}`, out)
	var ts []store.NotifyTarget
	require.NoError(t, json.Unmarshal([]byte(c.ok("notify", "list", "--cluster", id, "--json")), &ts))
	require.Len(t, ts, 1)
	require.Equal(t, []string{"deployment.failed", "drift.detected"}, ts[0].Events)
	require.NotContains(t, c.ok("notify", "list", "--cluster", id, "--json"), "secret")
	_, errOut, code = c.run("", "notify", "add", "--cluster", id, "--url", "https://x", "--events", "deployment.exploded")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `event "deployment.exploded"`)
	_, errOut, code = c.run("", "notify", "add", "--cluster", id, "--url", "ftp://x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "use an http(s) URL")
	c.ok("notify", "remove", ts[0].ID.String())

	table := c.ok("audit", "--cluster", id)
	require.True(t, strings.HasPrefix(table, "TIME"), table)
	_, errOut, code = c.run("", "audit", "--since", "yesterday")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--since: want a duration")
}

// loginRole is what the trail records for the test's own pool: no grape.actor,
// so the login role.
func loginRole(t *testing.T) string {
	pool := testsupport.Pool(t, testsupport.DatabaseURL(t))
	var who string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT session_user`).Scan(&who))
	return who
}

// TestOnceDeliversWebhooksAndRotate: agent --once delivers its run's events
// before it exits, signed with the secret notify rotate printed; with the
// receiver down it waits --webhook-wait, says so, and the run's outcome
// stands.
func TestOnceDeliversWebhooksAndRotate(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	id := uniqueClusterID("hook")
	c.ok("cluster", "create", id, "--no-agent-role")
	var mu sync.Mutex
	var secret string
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !webhook.Verify(secret, body, r.Header.Get(webhook.HeaderSignature)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		got = append(got, r.Header.Get(webhook.HeaderEvent))
	}))
	defer srv.Close()
	out := c.ok("notify", "add", "--cluster", id, "--url", srv.URL+"/hook", "--events", "deployment.failed")
	first := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(out)
	require.Len(t, first, 2, out)
	var ts []store.NotifyTarget
	require.NoError(t, json.Unmarshal([]byte(c.ok("notify", "list", "--cluster", id, "--json")), &ts))
	require.Len(t, ts, 1)
	out = c.ok("notify", "rotate", "--cluster", id, "--id", ts[0].ID.String())
	rotated := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(out)
	require.Len(t, rotated, 2, out)
	require.NotEqual(t, first[1], rotated[1])
	mu.Lock()
	secret = rotated[1]
	mu.Unlock()
	var trail []store.AuditEvent
	require.NoError(t, json.Unmarshal([]byte(c.ok("audit", "--cluster", id, "--json")), &trail))
	var actions []string
	for _, e := range trail {
		actions = append(actions, e.Action)
		require.NotContains(t, string(e.Details), "127.0.0.1", "no URL in the trail")
	}
	require.Equal(t, []string{"cluster.created", "webhook.added", "webhook.secret_rotated"}, actions)
	_, errOut, code := c.run("", "notify", "rotate", "--cluster", "other", "--id", ts[0].ID.String())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such webhook in cluster other")
	_, errOut, code = c.run("", "notify", "rotate", "--cluster", id, "--id", "x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--id: "x" is not a UUID`)

	// A deployment that fails fast, without terraform: an unknown module
	// (written around the CLI, which would refuse it).
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	cfg, err := st.UpsertConfig(ctx, id, "web", json.RawMessage(`{"modules":{"vcp":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	once := func(wait string) (string, int) {
		_, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: id, ConfigID: cfg.ID})
		require.NoError(t, err)
		_, errOut, code := c.run("", "agent", "--cluster", id, "--once", "--data-dir", t.TempDir(), "--metrics-listen", "",
			"--provider-mirror", testsupport.ProviderMirror, "--log-format", "text", "--webhook-wait", wait)
		return errOut, code
	}
	errOut, code = once("30s")
	require.Equal(t, 0, code, errOut)
	mu.Lock()
	require.Equal(t, []string{"deployment.failed"}, got, "delivered before agent --once exited")
	mu.Unlock()
	require.Contains(t, errOut, "webhook events delivered")

	srv.Close() // the receiver is down: the wait is bounded, and said
	start := time.Now()
	errOut, code = once("1s")
	require.Equal(t, 0, code, errOut)
	require.Less(t, time.Since(start), time.Minute)
	require.Contains(t, errOut, "webhook events not delivered before exit")
	require.Contains(t, errOut, "pending=1")
}

// TestPruneCountsWebhookEvents: grape prune reports (and, without
// --dry-run, deletes) the delivered webhook events before its cutoff.
func TestPruneCountsWebhookEvents(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	id := uniqueClusterID("prune")
	c.ok("cluster", "create", id, "--no-agent-role")
	c.ok("notify", "add", "--cluster", id, "--url", "https://hooks.example.com/grape")
	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	st := store.New(pool)
	cfg, err := st.UpsertConfig(ctx, id, "web", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: id, ConfigID: cfg.ID})
	require.NoError(t, err)
	_, err = st.ClaimByID(ctx, d.ID, "agent", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, d.ID, "agent", store.Outcome{Status: store.StatusSucceeded}))
	tag, err := pool.Exec(ctx, `UPDATE notify_outbox SET created_at = now() - interval '10 days', delivered_at = now() - interval '10 days' WHERE deployment_id = $1`, d.ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())

	require.Contains(t, c.ok("prune", "--older-than", "7d", "--dry-run"), "would delete 1 webhook events (delivered before the log cutoff)")
	require.Contains(t, c.ok("prune", "--older-than", "7d"), "deleted 1 webhook events")
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM notify_outbox WHERE deployment_id = $1`, d.ID).Scan(&left))
	require.Zero(t, left)
}
