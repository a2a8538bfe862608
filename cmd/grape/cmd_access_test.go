package main

import (
	"context"
	"encoding/json"
	"os/user"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
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
	c.ok("member", "remove", "--cluster", id, "--user", bob)
	_, errOut, code := c.run("", "member", "remove", "--cluster", id, "--user", bob)
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
