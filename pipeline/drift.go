package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

// DriftRecorder stores a drift check's report and acts on it (webhooks,
// auto-remediation). Package drift implements it.
type DriftRecorder interface {
	Record(ctx context.Context, cfg store.Config, report store.DriftReport) (store.DriftReport, error)
}

// driftCheck re-plans the last applied commit of a config with refresh on and
// -detailed-exitcode, in its own run dir, and never applies: exit 0 is
// in_sync, 2 is drifted, anything else an error with the reason. It runs as a
// deployment (action drift), so it takes the config's slot like any other
// run: a deployment queued meanwhile waits, and it never overlaps one.
func (d *Deployer) driftCheck(ctx context.Context, r *reconciler.Run) store.Outcome {
	started := time.Now()
	dep := r.Deployment
	cfg, err := r.Store().GetConfigByID(ctx, dep.ConfigID)
	if err != nil {
		return failed(store.KindInternal, fmt.Sprintf("loading config: %v", err))
	}
	report := store.DriftReport{ConfigID: cfg.ID, ClusterID: cfg.ClusterID, DeploymentID: &dep.ID}
	if dep.SourceCommit == nil {
		return d.recordDrift(ctx, r, cfg, report, started, nil, errors.New("drift check has no commit to check (source_commit)"))
	}
	sha := *dep.SourceCommit
	report.CommitSHA = &sha
	if err := r.Store().SetCommit(ctx, dep.ID, r.AgentID(), sha); err != nil {
		return lost(err)
	}
	r.Logs.Agentf("drift check of %s at commit %s (the last applied one)", cfg.Name, short(sha))

	treeDir := filepath.Join(d.runDir(r), "tree")
	if err := r.SetPhase(ctx, store.PhaseCheckout); err != nil {
		return lost(err)
	}
	if err := os.RemoveAll(d.runDir(r)); err != nil {
		return d.recordDrift(ctx, r, cfg, report, started, nil, fmt.Errorf("clearing run dir: %w", err))
	}
	if err := d.checkout(ctx, sha, cfg, treeDir); err != nil {
		return d.recordDrift(ctx, r, cfg, report, started, nil, fmt.Errorf("checking out commit %s: %w", short(sha), err))
	}
	j, err := d.job(ctx, r, cfg, treeDir)
	if err != nil {
		return d.recordDrift(ctx, r, cfg, report, started, nil, err)
	}
	if err := r.SetPhase(ctx, store.PhaseInit); err != nil {
		return lost(err)
	}
	if err := d.Runner.Init(ctx, j); err != nil {
		return d.recordDrift(ctx, r, cfg, report, started, nil, err)
	}
	if err := r.SetPhase(ctx, store.PhasePlan); err != nil {
		return lost(err)
	}
	plan, err := d.Runner.Plan(ctx, j, runner.PlanOptions{DetailedExitCode: true, PlanFile: planFile})
	if err == nil {
		// A check that planned from an empty state would report every
		// resource as missing: report why instead.
		if o, ok := d.emptyState(ctx, r, cfg, j, plan); !ok {
			err = &stateguard.Refusal{Kind: o.Kind, Msg: o.Error}
		} else if o, ok := d.holdLocalState(ctx, r, cfg, j, plan); !ok {
			err = &stateguard.Refusal{Kind: o.Kind, Msg: o.Error}
		}
	}
	return d.recordDrift(ctx, r, cfg, report, started, &plan, err)
}

// recordDrift turns the check's result into a report and the deployment's
// outcome. A check that could not run is an "error" report, and the next
// pass tries again.
func (d *Deployer) recordDrift(ctx context.Context, r *reconciler.Run, cfg store.Config, report store.DriftReport, started time.Time, plan *runner.PlanResult, checkErr error) store.Outcome {
	if ctx.Err() != nil {
		// Cancelled or shutting down: no verdict to record.
		return failed(store.KindCancelled, fmt.Sprintf("drift check interrupted: %v", context.Cause(ctx)))
	}
	ms := int(time.Since(started).Milliseconds())
	report.DurationMS = &ms
	outcome := store.Outcome{Status: store.StatusSucceeded}
	switch {
	case checkErr != nil:
		report.Status = store.DriftError
		msg := checkErr.Error()
		var re *runner.Error
		if errors.As(checkErr, &re) {
			msg = re.Msg
		}
		report.Error = &msg
		kind := terraformFailed(checkErr).Kind
		var refusal *stateguard.Refusal
		if errors.As(checkErr, &refusal) {
			kind = refusal.Kind
		}
		outcome = failed(kind, "drift check failed: "+msg)
	case plan.Changes:
		report.Status = store.DriftDrifted
		details := plan.Drift
		if details == nil {
			details = &runner.DriftDetails{}
		}
		for i := range details.Resources {
			details.Resources[i].Changes = plandiff.RedactAttributes(details.Resources[i].Changes, d.Redact)
		}
		b, err := json.Marshal(details)
		if err != nil {
			return failed(store.KindInternal, fmt.Sprintf("encoding drift details: %v", err))
		}
		report.Details = b
		r.Logs.Agentf("drifted: %d resources differ from commit %s", len(details.Resources), short(ptr.Deref(report.CommitSHA)))
		for _, res := range details.Resources {
			r.Logs.Agentf("  %s: %s %v", res.Address, res.Action, res.Attributes)
		}
	default:
		report.Status = store.DriftInSync
		r.Logs.Agentf("in sync with commit %s", short(ptr.Deref(report.CommitSHA)))
	}
	if d.Drift == nil {
		return failed(store.KindInternal, "no drift recorder configured")
	}
	stored, err := d.Drift.Record(context.WithoutCancel(ctx), cfg, report)
	if err != nil {
		return failed(store.KindInternal, fmt.Sprintf("recording drift report: %v", err))
	}
	r.Logs.Agentf("drift report %s: %s", stored.ID, stored.Status)
	return outcome
}
