package pipeline

import (
	"context"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// afterPlan is the one point between a saved plan and anything done with it
// (apply, parking for approval, or a plan-only success). Checks that judge a
// plan belong here, each in a file of its own called from this function:
// a policy check on the plan JSON (KindPolicy), a diff against the last
// applied plan, git notes on the commit, state guards. It runs for every
// deployment that planned — plan-only ones too, so a plan-only run reports
// what an apply would be refused for — and never for drift checks.
//
// It returns ok = false with the deployment's outcome to stop the
// deployment before apply; j is the run's terraform job (its dir holds the
// plan file plan.PlanFile and the committed intent; the state guard reads
// where the state is from it). The run dir is removed after a stop like
// after any other failure.
func (d *Deployer) afterPlan(ctx context.Context, r *reconciler.Run, cfg store.Config, j runner.Job, plan runner.PlanResult) (store.Outcome, bool) {
	// The state guard first: a plan from an empty state is no plan to judge.
	if o, ok := d.checkState(ctx, r, cfg, j, plan); !ok {
		return o, false
	}
	if o, ok := d.checkPolicies(ctx, r, cfg, plan); !ok {
		return o, false
	}
	return store.Outcome{}, true
}
