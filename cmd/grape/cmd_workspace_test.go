package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestWorkspaceAcceptRewrite(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", spec)
	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	st := store.New(pool)
	old := strings.Repeat("a", 40)
	_, err := pool.Exec(ctx, `INSERT INTO deployments (config_id, cluster_id) SELECT id, cluster_id FROM configs`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE deployments SET status = 'succeeded', started_at = now() - interval '1 hour', finished_at = now(), commit_sha = $1`, old)
	require.NoError(t, err)

	_, errOut, code := c.run("", "workspace", "accept-rewrite", "--cluster", "eu-1")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--reason")
	_, errOut, code = c.run("", "workspace", "accept-rewrite", "--cluster", "eu-1", "--reason", "x", "--tip", "abc")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "40-digit")
	_, errOut, code = c.run("", "workspace", "accept-rewrite", "--cluster", "nope", "--reason", "x")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `cluster "nope" does not exist`)

	tip := strings.Repeat("b", 40)
	out := c.ok("workspace", "accept-rewrite", "--cluster", "eu-1", "--tip", tip, "--reason", "squashed by the git admin", "--as", "alice")
	require.Contains(t, out, "commit "+old+" is no longer required")
	require.Contains(t, out, "must build on "+tip)
	anchor, err := st.HistoryAnchor(ctx, "eu-1")
	require.NoError(t, err)
	require.Equal(t, tip, anchor)

	var list []store.WorkspaceRewrite
	require.NoError(t, json.Unmarshal([]byte(c.ok("workspace", "rewrites", "--cluster", "eu-1", "--json")), &list))
	require.Len(t, list, 1)
	require.Equal(t, "alice", list[0].AcceptedBy)
	require.Equal(t, "squashed by the git admin", list[0].Reason)
	require.Contains(t, c.ok("workspace", "rewrites", "--cluster", "eu-1"), "squashed by the git admin")
}
