package store_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// TestConfigPolicySet: the policy set is a versioned setting of the config,
// validated in Go and by the database.
func TestConfigPolicySet(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	require.Nil(t, c.PolicySet)
	spec := json.RawMessage(`{"modules":{"vpc":{}}}`)

	pci := "pci"
	c2, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", spec, store.ConfigSettings{PolicySet: &pci})
	require.NoError(t, err)
	require.Equal(t, "pci", *c2.PolicySet)
	require.Equal(t, 2, c2.Version, "a new policy set judges the plans: a new version")

	c3, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", spec, store.ConfigSettings{})
	require.NoError(t, err)
	require.Equal(t, "pci", *c3.PolicySet, "nil leaves it as is")
	require.Equal(t, 2, c3.Version)

	hist, err := b.st.ConfigHistory(b.ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, "pci", *hist[0].PolicySet)
	require.Nil(t, hist[1].PolicySet)
	v2, err := b.st.ConfigAtVersion(b.ctx, c.ID, 2)
	require.NoError(t, err)
	require.Equal(t, "pci", *v2.PolicySet)

	clear := ""
	c4, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", spec, store.ConfigSettings{PolicySet: &clear})
	require.NoError(t, err)
	require.Nil(t, c4.PolicySet)
	require.Equal(t, 3, c4.Version)

	bad := "../etc"
	_, err = b.st.UpsertConfig(b.ctx, "eu-1", "prod", spec, store.ConfigSettings{PolicySet: &bad})
	require.ErrorIs(t, err, store.ErrInvalid)
	require.ErrorContains(t, err, `policy set "../etc"`)
	// A front end writing directly is refused by the database.
	_, err = b.pool.Exec(b.ctx, `UPDATE configs SET policy_set = 'Has Spaces' WHERE id = $1`, c.ID)
	require.ErrorContains(t, err, "configs_policy_set_format")
}

// TestPolicyVerdictsAsAgentRole: an agent records verdicts and fails a run
// with kind policy under its own role; a warning raises require_approval,
// which the agent itself may not write.
func TestPolicyVerdictsAsAgentRole(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a := tn.seed(t, "pol")
	asA, asAPool, _ := tn.agent(t, a.cluster)
	ctx := tn.ctx
	const me = "agent-pol"

	require.NoError(t, asA.Finish(ctx, a.running.ID, a.agentID, store.Outcome{Status: store.StatusSucceeded}))
	d, err := asA.Claim(ctx, a.cluster, me, time.Minute)
	require.NoError(t, err)
	require.False(t, d.RequireApproval)

	// Clean verdicts: nothing else changes.
	clean := map[string]any{"digest": "sha256:00", "verdicts": []any{}, "denies": 0, "warnings": 0}
	require.NoError(t, asA.SetPolicy(ctx, d.ID, me, clean))
	got, err := asA.GetDeployment(ctx, d.ID)
	require.NoError(t, err)
	require.False(t, got.RequireApproval)
	require.JSONEq(t, `{"digest": "sha256:00", "verdicts": [], "denies": 0, "warnings": 0}`, string(got.Policy))

	// The agent may not lower (or raise) require_approval itself.
	_, err = asAPool.Exec(ctx, `UPDATE deployments SET require_approval = false WHERE id = $1`, d.ID)
	requireRefused(t, err)

	// A warning: the database raises require_approval.
	warned := map[string]any{"digest": "sha256:00", "warnings": 1, "denies": 0,
		"verdicts": []any{map[string]any{"kind": "warn", "msg": "aws_vpc.this will be replaced"}}}
	require.NoError(t, asA.SetPolicy(ctx, d.ID, me, warned))
	got, err = asA.GetDeployment(ctx, d.ID)
	require.NoError(t, err)
	require.True(t, got.RequireApproval)

	// Verdicts are an object; a denial ends the run with kind policy.
	require.Error(t, asA.SetPolicy(ctx, d.ID, me, []string{"not an object"}))
	require.NoError(t, asA.Finish(ctx, d.ID, me, store.Outcome{Status: store.StatusFailed, Kind: store.KindPolicy, Error: "aws_db_instance.x is publicly accessible"}))
	got, err = tn.admin.GetDeployment(ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, store.KindPolicy, *got.ErrorKind)
	require.Equal(t, store.StatusFailed, got.Status)

	// Only the holder of the run writes its verdicts.
	require.ErrorIs(t, asA.SetPolicy(ctx, d.ID, me, clean), store.ErrLeaseLost, "a finished run is history")
}
