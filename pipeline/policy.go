package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grapehq/grape/policy"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// policySet is the config's policy set ("" for the common policies only).
func policySet(cfg store.Config) string {
	if cfg.PolicySet == nil {
		return ""
	}
	return *cfg.PolicySet
}

// policyDigest is the digest of the policies that will judge cfg's plans,
// for the commit's Grape-Policies trailer. A config naming a set the
// agent's policy sources lack fails here, before anything is committed.
func (d *Deployer) policyDigest(cfg store.Config) (string, *store.Outcome) {
	if d.Policy == nil {
		return "", nil
	}
	dg, err := d.Policy.Digest(policySet(cfg))
	if err != nil {
		o := failed(store.KindPolicy, err.Error())
		return "", &o
	}
	return dg, nil
}

// checkPolicies judges the saved plan with the agent's policies. The plan
// JSON holds sensitive values in clear, so it stays here: only verdicts,
// messages (masked and redacted by policy.Engine) and the set's digest reach
// the deployment row and the log.
//
//   - a deny or violation fails the deployment (kind policy) with the first
//     message; every message is in the log and on the row;
//   - a warning sends the run to a person: the database raises
//     require_approval when the verdicts are stored;
//   - an evaluation that cannot complete (a conflict, a builtin error, the
//     time bound) fails the deployment, kind policy: nothing unjudged is
//     applied.
//
// A plan that changes nothing is not judged: nothing would be applied.
func (d *Deployer) checkPolicies(ctx context.Context, r *reconciler.Run, cfg store.Config, plan runner.PlanResult) (store.Outcome, bool) {
	if d.Policy == nil {
		return store.Outcome{}, true
	}
	dep := r.Deployment
	set := policySet(cfg)
	if !plan.Changes || len(plan.PlanJSON) == 0 {
		r.Logs.Agentf("policies: not evaluated, the plan changes nothing")
		return store.Outcome{}, true
	}
	res, err := d.Policy.Evaluate(ctx, policy.Input{Set: set, Plan: plan.PlanJSON, Grape: d.policyMeta(r, cfg), Redact: d.Redact})
	if err != nil {
		if ctx.Err() != nil {
			// Cancelled or shutting down: no verdict to record.
			return failed(store.KindCancelled, fmt.Sprintf("policy check interrupted: %v", context.Cause(ctx))), false
		}
		msg := "policy evaluation failed: " + err.Error()
		var unknown *policy.UnknownSetError
		if errors.As(err, &unknown) {
			msg = err.Error()
		}
		digest, _ := d.Policy.Digest(set)
		if serr := r.Store().SetPolicy(ctx, dep.ID, r.AgentID(), policy.Failed(digest, set, err)); serr != nil {
			return lost(serr), false
		}
		r.Logs.Agentf("%s; nothing is applied", msg)
		return failed(store.KindPolicy, msg), false
	}
	for _, v := range res.Verdicts {
		r.Logs.Agentf("policy %s: %s (%s, %s:%d)", v.Kind, v.Msg, v.Rule, v.File, v.Line)
	}
	if res.Omitted > 0 {
		r.Logs.Agentf("policy: %d more verdicts not listed", res.Omitted)
	}
	r.Logs.Agentf("policies (%s%s): %d denied, %d warnings, %d rules in %d ms", shortDigest(res.Digest), setLabel(set), res.Denies, res.Warnings, res.Rules, res.TookMS)
	if err := r.Store().SetPolicy(ctx, dep.ID, r.AgentID(), res); err != nil {
		return lost(err), false
	}
	if res.Denied() {
		r.Logs.Agentf("denied by policy: nothing is applied")
		return failed(store.KindPolicy, "denied by policy: "+res.FirstDenial()), false
	}
	if res.Warned() && !dep.RequireApproval {
		// The database raised require_approval with the verdicts; the run
		// follows it so the apply waits for a person.
		r.Deployment.RequireApproval = true
		if dep.Action != store.ActionPlan {
			r.Logs.Agentf("policy warnings: this run needs approval before apply")
		}
	}
	return store.Outcome{}, true
}

func setLabel(set string) string {
	if set == "" {
		return ""
	}
	return ", set " + set
}

// policyMeta is input.grape for the deployment: the intent as committed (the
// run dir's intent.json), who asked, and which templates rendered it.
func (d *Deployer) policyMeta(r *reconciler.Run, cfg store.Config) policy.Meta {
	dep := r.Deployment
	version := cfg.Version
	if dep.ConfigVersion != nil {
		version = *dep.ConfigVersion
	}
	m := policy.Meta{
		DeploymentID: dep.ID.String(), Cluster: cfg.ClusterID, Config: cfg.Name, ConfigVersion: version,
		Action: string(dep.Action), RequestedBy: dep.RequestedBy, PolicySet: policySet(cfg),
	}
	// The commit being applied, not the database row, is what the plan
	// came from: read the intent and the template set from it.
	tree := d.treeDir(r)
	if b, err := os.ReadFile(filepath.Join(tree, render.FileIntent)); err == nil && json.Valid(b) {
		m.Intent = b
	}
	if b, err := os.ReadFile(filepath.Join(tree, render.FileMetadata)); err == nil {
		var meta render.Metadata
		if json.Unmarshal(b, &meta) == nil {
			m.TemplatesVersion, m.TemplatesDigest = meta.TemplateVersion, meta.TemplateDigest
		}
	}
	return m
}
