package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// TestDriftRemediateRefusesAStaleReport: the CLI applies the rule the portal
// does — a remediation never rolls back a newer report or deployment — and a
// refused remediation queues nothing.
func TestDriftRemediateRefusesAStaleReport(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	cfgID := uuid.MustParse(c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", spec))
	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	st := store.New(pool)
	sha := strings.Repeat("ab", 20)
	report := func(ago string) uuid.UUID {
		var id uuid.UUID
		require.NoError(t, pool.QueryRow(ctx, `INSERT INTO drift_reports (config_id, cluster_id, checked_at, status, commit_sha, details)
VALUES ($1, 'eu-1', now() - $2::interval, 'drifted', $3, '{}') RETURNING id`, cfgID, ago, sha).Scan(&id))
		return id
	}
	deployments := func() int {
		ds, err := st.ListDeployments(ctx, store.ListFilter{ClusterID: "eu-1"})
		require.NoError(t, err)
		return len(ds)
	}
	older, newer := report("2 hours"), report("1 hour")

	_, errOut, code := c.run("", "drift", "remediate", older.String())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "drift report "+older.String()+" cannot be remediated: a newer drift check of this config exists (report "+newer.String()+")")
	require.Zero(t, deployments(), "a refused remediation queues nothing")

	// The newest report is remediable: an apply of its commit.
	id := uuid.MustParse(c.ok("drift", "remediate", newer.String()))
	d, err := st.GetDeployment(ctx, id)
	require.NoError(t, err)
	require.Equal(t, store.ActionApply, d.Action)
	require.Equal(t, sha, *d.SourceCommit)

	// Once that apply has succeeded, the report is older than what is applied.
	_, err = st.Claim(ctx, "eu-1", "agent-1", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, id, "agent-1", store.Outcome{Status: store.StatusSucceeded}))
	_, errOut, code = c.run("", "drift", "remediate", newer.String())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "the config was deployed after this drift check (deployment "+id.String()+"): run a new drift check first")
	require.Equal(t, 1, deployments())
}
