package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// TestVersionNamesTheEngine: grape version says which engine the binary is
// and its version, for terraform and OpenTofu alike.
func TestVersionNamesTheEngine(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, env: map[string]string{}}
	for _, e := range testsupport.Engines(t) {
		out := c.ok("version", "--terraform-binary", e.Binary)
		assert.Regexp(t, `(?m)^engine: `+e.Name+` \d+\.\d+\.\d+\S* \(`, out)
	}
	out := c.ok("version", "--terraform-binary", "/nonexistent/terraform")
	assert.Contains(t, out, "engine: not found (/nonexistent/terraform: ")
}

// TestQueuedSaysWhatItWaitsFor: a deployment queued behind a parked
// approval says so in grape status and grape logs, with the expiry; a
// pruned log says it was pruned.
func TestQueuedSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	ctx := context.Background()
	_, err := st.CreateCluster(ctx, "eu-1", "")
	require.NoError(t, err)
	cfg, err := st.UpsertConfig(ctx, "eu-1", "prod", []byte(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	parked, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfg.ID, RequireApproval: true})
	require.NoError(t, err)
	_, err = st.ClaimByID(ctx, parked.ID, "agent-1", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.AwaitApproval(ctx, parked.ID, "agent-1"))
	queued, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfg.ID})
	require.NoError(t, err)

	want := "[grape] queued: waiting for deployment " + parked.ID.String() + ", which has awaited approval for "
	assert.Contains(t, c.ok("status", queued.ID.String()), want)
	out := c.ok("logs", queued.ID.String())
	assert.Contains(t, out, want)
	assert.Contains(t, out, "; it expires at ")

	_, err = st.RequestCancel(ctx, parked.ID, "test")
	require.NoError(t, err)
	d, err := st.GetDeployment(ctx, parked.ID)
	require.NoError(t, err)
	require.True(t, d.Status.Final(), "cancelled: %s", d.Status)
	_, err = st.Prune(ctx, store.PruneOptions{LogsBefore: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Contains(t, c.ok("logs", parked.ID.String()), "[grape] the log of this deployment was pruned at ")
	assert.Contains(t, c.ok("status", parked.ID.String()), "pruned at ")
	assert.NotContains(t, c.ok("status", queued.ID.String()), "waiting for", "the config is free now")
}
