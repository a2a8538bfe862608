package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// TestPlanDiffAsAgentRole: the agent holding a run stores its plan diff
// under its own role; the column takes objects only, and a finished run's
// diff cannot be rewritten.
func TestPlanDiffAsAgentRole(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a := tn.seed(t, "pdiff")
	asA, _, _ := tn.agent(t, a.cluster)
	ctx := tn.ctx
	const me = "agent-pdiff"

	require.NoError(t, asA.Finish(ctx, a.running.ID, a.agentID, store.Outcome{Status: store.StatusSucceeded}))
	d, err := asA.Claim(ctx, a.cluster, me, time.Minute)
	require.NoError(t, err)
	require.Nil(t, d.PlanDiff, "no diff before the plan")

	diff := map[string]any{"resources": []any{map[string]any{"address": "aws_vpc.this", "action": "update",
		"attributes": []any{map[string]any{"path": "tags.team", "action": "change", "old": "blue", "new": "green"}}}}}
	require.NoError(t, asA.SetPlanDiff(ctx, d.ID, me, diff))
	got, err := asA.GetDeployment(ctx, d.ID)
	require.NoError(t, err)
	require.JSONEq(t, `{"resources":[{"address":"aws_vpc.this","action":"update","attributes":[{"path":"tags.team","action":"change","old":"blue","new":"green"}]}]}`, string(got.PlanDiff))

	require.ErrorContains(t, asA.SetPlanDiff(ctx, d.ID, me, []string{"not an object"}), "deployments_plan_diff_object")
	require.NoError(t, asA.Finish(ctx, d.ID, me, store.Outcome{Status: store.StatusSucceeded}))
	require.ErrorIs(t, asA.SetPlanDiff(ctx, d.ID, me, diff), store.ErrLeaseLost, "a finished run is history")
}
