package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// planFile is where a deployment's saved plan lives inside its run dir.
const planFile = "grape.tfplan"

// job describes terraform's work on the run dir of r.
func (d *Deployer) job(ctx context.Context, r *reconciler.Run, cfg store.Config, treeDir string) (runner.Job, error) {
	j := runner.Job{
		Dir:    treeDir,
		Stdout: r.Logs.Writer(store.StreamStdout),
		Stderr: r.Logs.Writer(store.StreamStderr),
		Agent:  func(msg string) { r.Logs.Agentf("%s", msg) },
		// Runs of one config reuse its init while nothing init depends on
		// changed (runner checks the fingerprint and says so in the log).
		InitCache: d.initCache(cfg.ID),
	}
	backend, err := committedBackend(treeDir)
	if err != nil {
		return j, err
	}
	if len(d.SecretVars) > 0 {
		// Outside the tree dir: the tree stays exactly the commit.
		path := filepath.Join(filepath.Dir(treeDir), "secret.tfvars.json")
		b, err := json.Marshal(d.SecretVars)
		if err != nil {
			return j, fmt.Errorf("encoding agent-side variables: %w", err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return j, fmt.Errorf("writing agent-side variables: %w", err)
		}
		j.VarFiles = []string{path}
	}
	if backend == "local" {
		path, err := d.localStatePath(ctx, r, cfg)
		if err != nil {
			return j, err
		}
		j.BackendConfig = map[string]string{"path": path}
	}
	return j, nil
}

// committedBackend reads the backend type from the committed intent: the
// local backend gets its state path from the agent, never from the commit.
func committedBackend(treeDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(treeDir, intentFile))
	if errors.Is(err, os.ErrNotExist) {
		return "local", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading committed intent: %w", err)
	}
	var in struct {
		Backend *struct {
			Type string `json:"type"`
		} `json:"backend"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return "", fmt.Errorf("reading committed intent: %w", err)
	}
	if in.Backend == nil || in.Backend.Type == "" {
		return "local", nil
	}
	return in.Backend.Type, nil
}

// terraform runs init, plan, the optional cost estimate and apply on a fresh
// copy of exactly the commit sha.
func (d *Deployer) terraform(ctx context.Context, r *reconciler.Run, cfg store.Config, sha string) store.Outcome {
	dep := r.Deployment
	treeDir := d.treeDir(r)
	if err := r.SetPhase(ctx, store.PhaseCheckout); err != nil {
		return lost(err)
	}
	// A requeued attempt may find its predecessor's run dir: start clean.
	if err := os.RemoveAll(d.runDir(r)); err != nil {
		return failed(store.KindInternal, fmt.Sprintf("clearing run dir: %v", err))
	}
	if err := d.checkout(ctx, sha, cfg, treeDir); err != nil {
		if o, full := diskFull(r, err, "checking out commit "+short(sha)); full {
			return o
		}
		return failed(store.KindGit, fmt.Sprintf("checking out commit %s: %v", short(sha), err))
	}
	j, err := d.job(ctx, r, cfg, treeDir)
	if err != nil {
		if o, full := diskFull(r, err, "preparing the run dir"); full {
			return o
		}
		return failed(store.KindInternal, err.Error())
	}

	d.mark(r, MarkTerraformStart)
	if err := r.SetPhase(ctx, store.PhaseInit); err != nil {
		return lost(err)
	}
	if dep.MigrateState {
		if o, ok := d.prepareMigration(ctx, r, cfg, &j); !ok {
			return o
		}
	}
	if err := d.Runner.Init(ctx, j); err != nil {
		return d.terraformFailedIn(ctx, r, err)
	}
	if j.MigrateState {
		if o, ok := d.finishMigration(ctx, r, cfg, j); !ok {
			return o
		}
	}
	if err := r.SetPhase(ctx, store.PhasePlan); err != nil {
		return lost(err)
	}
	planOpts := runner.PlanOptions{Destroy: dep.Action == store.ActionDestroy, PlanFile: planFile}
	plan, err := d.Runner.Plan(ctx, j, planOpts)
	if err != nil && d.releaseStaleLock(ctx, r, j, err) {
		plan, err = d.Runner.Plan(ctx, j, planOpts)
	}
	if err != nil {
		return d.terraformFailedIn(ctx, r, err)
	}
	if err := r.Store().SetPlanSummary(ctx, dep.ID, r.AgentID(), plan.Summary); err != nil {
		return lost(err)
	}
	// The diff went to the log with the plan (runner); the row gets it too.
	if err := r.Store().SetPlanDiff(ctx, dep.ID, r.AgentID(), plan.Diff.Redacted(d.Redact)); err != nil {
		return lost(err)
	}
	r.Logs.Agentf("plan: %d to add, %d to change, %d to destroy, %d to replace", plan.Summary.Add, plan.Summary.Change, plan.Summary.Destroy, plan.Summary.Replace)
	if d.Cost {
		if err := r.SetPhase(ctx, store.PhaseCost); err != nil {
			return lost(err)
		}
		if est, err := d.Runner.Cost(ctx, j, plan.PlanFile, plan.PlanJSON); err == nil && est != nil {
			if err := r.Store().SetCost(ctx, dep.ID, r.AgentID(), est); err != nil {
				return lost(err)
			}
		}
	}
	if o, ok := d.afterPlan(ctx, r, cfg, j, plan); !ok {
		d.mark(r, MarkTerraformEnd)
		return o
	}
	switch {
	case dep.Action == store.ActionPlan:
		d.mark(r, MarkTerraformEnd)
		return store.Outcome{Status: store.StatusSucceeded}
	case !plan.Changes:
		d.mark(r, MarkTerraformEnd)
		r.Logs.Agentf("no changes: nothing to apply")
		return store.Outcome{Status: store.StatusSucceeded}
	case r.Deployment.RequireApproval: // afterPlan may have raised it (a policy warning)
		d.mark(r, MarkTerraformEnd)
		// The plan file stays in the run dir for the apply after approval.
		return store.Outcome{Status: store.StatusAwaitingApproval}
	}
	return d.apply(ctx, r, j, plan.PlanFile)
}

// apply applies the saved plan — never a fresh one — and records outputs.
func (d *Deployer) apply(ctx context.Context, r *reconciler.Run, j runner.Job, plan string) store.Outcome {
	// SetPhase fails if the lease is no longer ours: nothing is applied then.
	if err := r.SetPhase(ctx, store.PhaseApply); err != nil {
		return lost(err)
	}
	d.snapshotState(r, j)
	res, err := d.Runner.ApplyOutputs(ctx, j, plan)
	if err != nil {
		d.mark(r, MarkTerraformEnd)
		return d.terraformFailedIn(ctx, r, err)
	}
	if err := r.SetPhase(ctx, store.PhaseOutputs); err != nil {
		return lost(err)
	}
	d.mark(r, MarkTerraformEnd)
	if r.Deployment.Action == store.ActionDestroy {
		// Nothing of the config is left to plan: its kept init goes too.
		if err := runner.ForgetInit(j.InitCache); err != nil {
			r.Log.Warn("removing the init cache of a destroyed config", "err", err)
		}
	}
	if res.OutputsErr != nil {
		// The apply succeeded; failing to read outputs does not undo it.
		r.Logs.Agentf("reading outputs failed (the apply itself succeeded): %v", res.OutputsErr)
	} else if err := r.Store().SetOutputs(ctx, r.Deployment.ID, r.AgentID(), res.Outputs); err != nil {
		return lost(err)
	}
	return store.Outcome{Status: store.StatusSucceeded}
}

// applyApproved resumes a deployment a person approved: it applies the plan
// saved before approval, after checking that it still means what was
// approved — the same config version, the same commit, an untouched run dir.
func (d *Deployer) applyApproved(ctx context.Context, r *reconciler.Run) store.Outcome {
	dep := r.Deployment
	r.Logs.Agentf("approved by %s; applying the saved plan", ptr.Deref(dep.ApprovedBy))
	cfg, err := r.Store().GetConfigByID(ctx, dep.ConfigID)
	if err != nil {
		return failed(store.KindInternal, fmt.Sprintf("loading config: %v", err))
	}
	if dep.ConfigVersion != nil && *dep.ConfigVersion != cfg.Version {
		return failed(store.KindApprovalRefused, fmt.Sprintf("approval refused: the config changed from v%d to v%d since this plan was made; queue a new deployment", *dep.ConfigVersion, cfg.Version))
	}
	if dep.CommitSHA == nil {
		return failed(store.KindInternal, "approved deployment has no commit")
	}
	treeDir := filepath.Join(d.runDir(r), "tree")
	plan := filepath.Join(treeDir, planFile)
	if _, err := os.Stat(plan); err != nil {
		return failed(store.KindApprovalRefused, "approval refused: the saved plan is gone from this agent's data dir; queue a new deployment")
	}
	if msg := d.commitMoved(ctx, cfg, *dep.CommitSHA, treeDir); msg != "" {
		return failed(store.KindApprovalRefused, "approval refused: "+msg+"; queue a new deployment")
	}
	j, err := d.job(ctx, r, cfg, treeDir)
	if err != nil {
		return failed(store.KindInternal, err.Error())
	}
	d.mark(r, MarkTerraformStart)
	return d.apply(ctx, r, j, plan)
}

// commitMoved says why the approved commit no longer stands, or "".
func (d *Deployer) commitMoved(ctx context.Context, cfg store.Config, sha, treeDir string) string {
	approved, err := d.files(ctx, sha, cfg)
	if err != nil {
		return fmt.Sprintf("reading commit %s failed: %v", short(sha), err)
	}
	head, err := d.Git.Head(ctx)
	if err != nil {
		return fmt.Sprintf("reading the workspace head failed: %v", err)
	}
	if head != sha {
		latest, err := d.files(ctx, head, cfg)
		if err != nil {
			return fmt.Sprintf("reading the workspace head failed: %v", err)
		}
		if !sameFiles(approved, latest) {
			return fmt.Sprintf("the rendering of %s changed in git since commit %s", cfg.Name, short(sha))
		}
	}
	for name, want := range approved {
		if name == runner.LockFile {
			want = d.Runner.LockFileInRunDir(want)
		}
		got, err := os.ReadFile(filepath.Join(treeDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Sprintf("the run dir no longer matches commit %s (%s)", short(sha), name)
		}
	}
	return ""
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// terraformFailed turns a runner error into the outcome a person reads.
func terraformFailed(err error) store.Outcome {
	var re *runner.Error
	if !errors.As(err, &re) {
		return failed(store.KindInternal, err.Error())
	}
	// runner's kinds are the column's: nothing to map.
	kind := re.Kind
	if kind == store.KindCancelled {
		return store.Outcome{Status: store.StatusCancelled, Kind: kind, Error: re.Msg}
	}
	return failed(kind, re.Msg)
}
