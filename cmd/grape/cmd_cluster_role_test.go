package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

var agentURLLine = regexp.MustCompile(`GRAPE_DATABASE_URL='([^']+)'`)

// connectsAs opens the URL printed for the agent and says who it is and how
// many clusters it sees.
func connectsAs(t *testing.T, url string) (user string, clusters int, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT current_user, (SELECT count(*) FROM clusters)`).Scan(&user, &clusters)
	return user, clusters, err
}

func uniqueClusterID(prefix string) string { return prefix + "-" + uuid.NewString()[:8] }

func dropRoleAtEnd(t *testing.T, c *cli, id string) {
	t.Cleanup(func() {
		pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
		_ = store.New(pool).DropAgentRole(context.Background(), id)
	})
}

func TestClusterCreateMakesAgentRole(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	other := uniqueClusterID("other")
	c.ok("cluster", "create", other)
	id := uniqueClusterID("eu")
	dropRoleAtEnd(t, c, id)

	// `grape cluster create` as the lead wires it: the cluster, then the role.
	var out, errb bytes.Buffer
	cio := &cmdIO{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	ctx := context.Background()
	require.NoError(t, createClusterWithAgentRole(ctx, cio, c.env["GRAPE_DATABASE_URL"], id, "", agentRoleFlags{}))
	first, rest, _ := strings.Cut(out.String(), "\n")
	require.Equal(t, id, first, "the cluster id stays the first line")
	require.Contains(t, rest, "agent role "+store.AgentRoleName(id)+" of cluster "+id+" created")
	m := agentURLLine.FindStringSubmatch(rest)
	require.NotNil(t, m, rest)
	user, clusters, err := connectsAs(t, m[1])
	require.NoError(t, err)
	require.Equal(t, store.AgentRoleName(id), user)
	require.Equal(t, 1, clusters, "the agent sees its own cluster only")

	// Re-running keeps the password.
	out.Reset()
	require.NoError(t, createClusterWithAgentRole(ctx, cio, c.env["GRAPE_DATABASE_URL"], id, "", agentRoleFlags{}))
	require.Contains(t, out.String(), "password is unchanged")
	require.NotContains(t, out.String(), "GRAPE_DATABASE_URL")
	_, _, err = connectsAs(t, m[1])
	require.NoError(t, err)

	// Rotating replaces it.
	rotated := c.ok("cluster", "agent-role", id, "--rotate-password")
	m2 := agentURLLine.FindStringSubmatch(rotated)
	require.NotNil(t, m2, rotated)
	_, _, err = connectsAs(t, m[1])
	require.Error(t, err, "the old password no longer works")
	_, _, err = connectsAs(t, m2[1])
	require.NoError(t, err)

	// --no-agent-role makes only the cluster.
	plain := uniqueClusterID("plain")
	out.Reset()
	require.NoError(t, createClusterWithAgentRole(ctx, cio, c.env["GRAPE_DATABASE_URL"], plain, "", agentRoleFlags{noAgentRole: true}))
	require.Equal(t, plain+"\n", out.String())

	// Revoking cuts it off.
	require.Contains(t, c.ok("cluster", "agent-role", id, "--revoke"), "revoked")
	_, _, err = connectsAs(t, m2[1])
	require.Error(t, err)
}

func TestClusterCreatePrintSQL(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	id := uniqueClusterID("sb")
	dropRoleAtEnd(t, c, id)
	var out, errb bytes.Buffer
	cio := &cmdIO{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	require.NoError(t, createClusterWithAgentRole(context.Background(), cio, c.env["GRAPE_DATABASE_URL"], id, "it's new", agentRoleFlags{printSQL: true}))

	// Nothing changed yet.
	_, _, code := c.run("", "cluster", "agent-role", id)
	require.Equal(t, 1, code, "the cluster does not exist until the SQL runs")

	sql := out.String()
	require.Contains(t, sql, "INSERT INTO clusters (id, description) VALUES ('"+id+"', 'it''s new')")
	m := agentURLLine.FindStringSubmatch(errb.String())
	require.NotNil(t, m, errb.String())
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(errb.String())[1]
	require.NotContains(t, sql, password, "the SQL holds the verifier, never the password")

	// An admin runs it (the SQL editor sends it as one simple-protocol batch).
	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	_, err := pool.Exec(context.Background(), sql, pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	user, clusters, err := connectsAs(t, m[1])
	require.NoError(t, err)
	require.Equal(t, store.AgentRoleName(id), user)
	require.Equal(t, 1, clusters)
}

func TestClusterOwner(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	id := uniqueClusterID("own")
	c.ok("cluster", "create", id)
	user := uuid.NewString()
	require.Equal(t, "cluster "+id+": owner "+user+", organisation acme", c.ok("cluster", "owner", id, "--user", user, "--org", "acme"))
	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	o, err := store.New(pool).GetClusterOwnership(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, user, o.OwnerID.String())
	require.Equal(t, "acme", *o.OrgID)

	_, errOut, code := c.run("", "cluster", "owner", id, "--user", "bob")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "want a UUID")
	_, _, code = c.run("", "cluster", "owner", "no-such-cluster")
	require.Equal(t, 1, code)
}
