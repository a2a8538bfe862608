package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

// The state guards (docs/operations.md, "Where state lives"): before render,
// the version to deploy must not be behind the audit trail nor move an
// applied stack; after plan, an applied config must not plan from an empty
// state; a local state is held by one agent and kept in versions. The
// decisions are package stateguard's; this file gathers their inputs.

// auditDir is the config's directory name in the audit repository
// (clusters/<cluster>/<auditDir>/): its id, so a rename moves nothing.
func auditDir(cfg store.Config) string { return cfg.ID.String() }

// checkout writes the config's files of commit sha into dst. Commits made
// before directories were keyed by id hold the config under its name then;
// the current name is tried for those.
func (d *Deployer) checkout(ctx context.Context, sha string, cfg store.Config, dst string) error {
	err := d.Git.Checkout(ctx, sha, cfg.ClusterID, auditDir(cfg), dst)
	if errors.Is(err, gitstore.ErrNotInCommit) {
		return d.Git.Checkout(ctx, sha, cfg.ClusterID, cfg.Name, dst)
	}
	return err
}

// files reads the config's files of commit sha (see checkout).
func (d *Deployer) files(ctx context.Context, sha string, cfg store.Config) (map[string][]byte, error) {
	f, err := d.Git.Files(ctx, sha, cfg.ClusterID, auditDir(cfg))
	if errors.Is(err, gitstore.ErrNotInCommit) {
		return d.Git.Files(ctx, sha, cfg.ClusterID, cfg.Name)
	}
	return f, err
}

func (d *Deployer) localState() localstate.Dir { return localstate.Dir{DataDir: d.DataDir} }

// localStatePath is the config's local state file. A name-keyed directory an
// older agent left is moved to the id on first use — only for a config Grape
// applied, whose state it then is.
func (d *Deployer) localStatePath(ctx context.Context, r *reconciler.Run, cfg store.Config) (string, error) {
	ls := d.localState()
	applied, err := r.Store().AppliedState(ctx, cfg.ID)
	if err != nil {
		return "", err
	}
	a, err := ls.Adopt(cfg.ClusterID, cfg.ID.String(), cfg.Name, applied.Applied)
	if err != nil {
		return "", err
	}
	switch {
	case a.Moved:
		r.Logs.Agentf("local state moved from %s to %s: state is keyed by the config's id now, so a rename cannot lose it", a.From, a.To)
		r.Log.Info("moved name-keyed local state to the config's id", "from", a.From, "to", a.To)
	case a.From != "":
		r.Logs.Agentf("warning: %s holds a state under this config's name, but Grape has no apply of this config: left where it is (it may be another config's that had this name)", a.From)
	}
	path := ls.Path(cfg.ClusterID, cfg.ID.String())
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating local state dir: %w", err)
	}
	return path, nil
}

// checkBeforeRender refuses a version that is behind the audit repository's
// newest commit of the config, that moves the stack Grape applied to
// another region or backend, or that changes a template input marked as
// forcing a new stack. Nothing is rendered, committed or planned then.
func (d *Deployer) checkBeforeRender(ctx context.Context, r *reconciler.Run, cfg store.Config, spec json.RawMessage) (store.Outcome, bool) {
	dep := r.Deployment
	version := cfg.Version
	if dep.ConfigVersion != nil {
		version = *dep.ConfigVersion
	}
	latest, found, err := d.Git.LatestConfigCommit(ctx, cfg.ID.String())
	if err != nil {
		return failed(store.KindGit, fmt.Sprintf("reading the audit repository's history of %s: %v", cfg.Name, err)), false
	}
	refusal, note := stateguard.CheckAuditTrail(stateguard.AuditTrail{Config: cfg, Deployment: dep, Version: version,
		Found: found, LatestVersion: latest.Version, LatestSHA: latest.SHA, LatestAt: latest.When,
		Path: "clusters/" + cfg.ClusterID + "/" + auditDir(cfg)})
	if note != "" {
		r.Logs.Agentf("%s", note)
	}
	if refusal != nil {
		r.Logs.Agentf("%s", refusal.Msg)
		return failed(refusal.Kind, refusal.Msg), false
	}

	applied, err := r.Store().AppliedState(ctx, cfg.ID)
	if err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	if applied.Applied && applied.Version != 0 && applied.Version != version {
		was, err := r.Store().ConfigAtVersion(ctx, cfg.ID, applied.Version)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return failed(store.KindInternal, err.Error()), false
		}
		if o, ok := d.checkStackInputs(ctx, r, cfg, applied, was.Spec, spec, version); !ok {
			return o, false
		}
		if dep.MigrateState && strings.HasPrefix(stateguard.IdentityChange(was.Spec, spec), "backend ") {
			r.Logs.Agentf("this deployment migrates the state of %s: %s (requested by %s with grape config apply --migrate-backend)",
				cfg.Name, stateguard.IdentityChange(was.Spec, spec), dep.RequestedBy)
			return store.Outcome{}, true
		}
		if refusal := stateguard.CheckIdentity(cfg, applied, was.Spec, spec, version); refusal != nil {
			r.Logs.Agentf("%s", refusal.Msg)
			return failed(refusal.Kind, refusal.Msg), false
		}
	}
	return store.Outcome{}, true
}

// checkStackInputs applies stateguard.CheckStackInputs with the templates
// the render step will use. The database's identity guard cannot read
// templates, so an intent written from the browser or by SQL is stopped here.
func (d *Deployer) checkStackInputs(ctx context.Context, r *reconciler.Run, cfg store.Config, applied store.Applied, appliedSpec, spec json.RawMessage, version int) (store.Outcome, bool) {
	cat, err := d.Templates(ctx)
	if err != nil {
		return failed(store.KindBadConfig, fmt.Sprintf("loading templates: %v", err)), false
	}
	if refusal := stateguard.CheckStackInputs(cat, cfg, applied, appliedSpec, spec, version); refusal != nil {
		r.Logs.Agentf("%s", refusal.Msg)
		return failed(refusal.Kind, refusal.Msg), false
	}
	return store.Outcome{}, true
}

// checkState is the after-plan state guard: an applied config whose plan
// started from an empty state stops here (state_missing). Otherwise it
// records what the state will hold after this deployment applies (counted
// only if it succeeds) and, for a local state, that this agent holds it.
func (d *Deployer) checkState(ctx context.Context, r *reconciler.Run, cfg store.Config, j runner.Job, plan runner.PlanResult) (store.Outcome, bool) {
	dep := r.Deployment
	if refusal, ok := d.emptyState(ctx, r, cfg, j, plan); !ok {
		return refusal, false
	}
	if dep.Action == store.ActionApply || dep.Action == store.ActionDestroy {
		after := plan.StateResourcesAfter()
		if !plan.Changes {
			after = plan.PriorResources
		}
		if err := r.Store().SetStateResources(ctx, dep.ID, r.AgentID(), after); err != nil {
			return lost(err), false
		}
	}
	return d.holdLocalState(ctx, r, cfg, j, plan)
}

// emptyState applies stateguard.CheckEmptyState to a plan of the run.
func (d *Deployer) emptyState(ctx context.Context, r *reconciler.Run, cfg store.Config, j runner.Job, plan runner.PlanResult) (store.Outcome, bool) {
	dep := r.Deployment
	applied, err := r.Store().AppliedState(ctx, cfg.ID)
	if err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	// A plan that changes nothing did not start from an empty state (the
	// config's resources would be creates), and a drift check in sync does
	// not read the plan JSON, so its prior-state count is unknown (0).
	if !applied.Applied || plan.PriorResources > 0 || !plan.Changes {
		return store.Outcome{}, true
	}
	intent, err := os.ReadFile(filepath.Join(j.Dir, intentFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return failed(store.KindInternal, fmt.Sprintf("reading committed intent: %v", err)), false
	}
	where, err := stateguard.LocationOf(intent, cfg.ClusterID, cfg.ID.String(), j.BackendConfig["path"], r.AgentID())
	if err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	refusal, note := stateguard.CheckEmptyState(stateguard.EmptyState{Config: cfg, Deployment: dep, Applied: applied, PriorResources: plan.PriorResources, Where: where})
	if note != "" {
		r.Logs.Agentf("%s", note)
	}
	if refusal != nil {
		r.Logs.Agentf("%s", refusal.Msg)
		return failed(refusal.Kind, refusal.Msg), false
	}
	return store.Outcome{}, true
}

// holdLocalState records this agent as the holder of a local state it is
// about to write, or that it already holds resources of; from then on only
// this agent claims the config. Another holder (a race with a manual
// release) stops the run: this agent's state is not the one that counts.
func (d *Deployer) holdLocalState(ctx context.Context, r *reconciler.Run, cfg store.Config, j runner.Job, plan runner.PlanResult) (store.Outcome, bool) {
	dep := r.Deployment
	writes := (dep.Action == store.ActionApply || dep.Action == store.ActionDestroy) && plan.Changes
	if j.BackendConfig["path"] == "" || (!writes && plan.PriorResources == 0) {
		return store.Outcome{}, true
	}
	h, err := r.Store().RecordStateHolder(ctx, cfg.ClusterID, cfg.ID, dep.ID, r.AgentID())
	if errors.Is(err, store.ErrHeldElsewhere) {
		msg := fmt.Sprintf("state missing: agent %s holds the state of config %s, not this agent (%s); nothing was applied: queue the deployment again and it will wait for that agent", h.AgentID, cfg.Name, r.AgentID())
		r.Logs.Agentf("%s", msg)
		return failed(store.KindStateMissing, msg), false
	}
	if err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	if h.DeploymentID != nil && *h.DeploymentID == dep.ID {
		r.Logs.Agentf("this agent (%s) now holds the local state of %s: its deployments run here from now on", r.AgentID(), cfg.Name)
	}
	return store.Outcome{}, true
}

// snapshotState keeps the local state as it is before an apply changes it
// (the newest localstate.Keep versions, for `grape state restore`).
func (d *Deployer) snapshotState(r *reconciler.Run, j runner.Job) {
	if j.BackendConfig["path"] == "" {
		return
	}
	dep := r.Deployment
	v, ok, err := d.localState().Snapshot(dep.ClusterID, dep.ConfigID.String(), "before apply of deployment "+dep.ID.String(), time.Now())
	switch {
	case err != nil:
		// A backup that could not be written is worth a warning, not
		// worth refusing the apply the person asked for.
		r.Logs.Agentf("warning: keeping a version of the local state failed: %v", err)
		r.Log.Warn("keeping a version of the local state failed", "err", err)
	case ok:
		r.Logs.Agentf("kept the local state as version %s (serial %d, %d resources): `grape state list` shows the last %d", v.Name, v.Serial, v.Resources, localstate.Keep)
	}
}
