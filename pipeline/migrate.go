package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

// A deployment queued by `grape config apply --migrate-backend` moves the
// config's local state to the intent's new backend with terraform's own
// migration: a run dir is a fresh checkout, so terraform has no record of
// the old backend; the agent first initialises the run dir on the old local
// state (through an override file, removed before anything else runs),
// then the ordinary init with -force-copy (-migrate-state without prompts)
// copies the state to the new backend. The claim gave this deployment to
// the agent holding the state.

// migrateOverride names the old backend for the first init only.
const migrateOverride = "zz_grape_migrate_override.tf"

// prepareMigration initialises j.Dir on this agent's local state of the
// config and sets j.MigrateState for the init that follows.
func (d *Deployer) prepareMigration(ctx context.Context, r *reconciler.Run, cfg store.Config, j *runner.Job) (store.Outcome, bool) {
	if j.BackendConfig["path"] != "" {
		msg := fmt.Sprintf("invalid intent: --migrate-backend moves a local state to a shared backend, but v%d of config %s uses the local backend; copy the state by hand (docs/operations.md, \"Moving state to another backend\")", ptrVersion(r, cfg), cfg.Name)
		r.Logs.Agentf("%s", msg)
		return failed(store.KindBadConfig, msg), false
	}
	old := d.localState().Path(cfg.ClusterID, cfg.ID.String())
	if _, err := os.Stat(old); err != nil {
		msg := fmt.Sprintf("state missing: there is no local state of config %s at %s on agent %s to migrate (%v); nothing was planned: run this on the agent that holds it (`grape state list --cluster %s --config %s` there)",
			cfg.Name, old, r.AgentID(), err, cfg.ClusterID, cfg.Name)
		if !errors.Is(err, os.ErrNotExist) {
			msg = fmt.Sprintf("reading local state %s: %v", old, err)
		}
		r.Logs.Agentf("%s", msg)
		return failed(store.KindStateMissing, msg), false
	}
	override := filepath.Join(j.Dir, migrateOverride)
	if err := os.WriteFile(override, []byte("terraform {\n  backend \"local\" {}\n}\n"), 0o644); err != nil {
		return failed(store.KindInternal, fmt.Sprintf("writing %s: %v", migrateOverride, err)), false
	}
	r.Logs.Agentf("migrating the state of %s from this agent's local state %s to the intent's backend: first terraform init on the local state", cfg.Name, old)
	oj := *j
	oj.BackendConfig = map[string]string{"path": old}
	err := d.Runner.Init(ctx, oj)
	if rerr := os.Remove(override); rerr != nil && err == nil {
		return failed(store.KindInternal, fmt.Sprintf("removing %s: %v", migrateOverride, rerr)), false
	}
	if err != nil {
		return d.terraformFailedIn(ctx, r, err), false
	}
	j.MigrateState = true
	return store.Outcome{}, true
}

// finishMigration records that the state left this agent (it no longer
// holds the config) and takes the local copy out of the live path, kept
// under state-moved/ for recovery.
func (d *Deployer) finishMigration(ctx context.Context, r *reconciler.Run, cfg store.Config, j runner.Job) (store.Outcome, bool) {
	intent, err := os.ReadFile(filepath.Join(j.Dir, intentFile))
	if err != nil {
		return failed(store.KindInternal, fmt.Sprintf("reading committed intent: %v", err)), false
	}
	to, err := stateguard.LocationOf(intent, cfg.ClusterID, cfg.ID.String(), "", "")
	if err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	if err := r.Store().StateMigrated(ctx, r.Deployment.ID, r.AgentID(), to.String()); err != nil {
		return failed(store.KindInternal, err.Error()), false
	}
	kept, err := d.localState().MoveAway(cfg.ClusterID, cfg.ID.String(), time.Now().UTC().Format("20060102T150405Z")+"-migrated-to-"+to.Backend)
	if err != nil {
		r.Logs.Agentf("warning: the state is in %s now, but taking the old local copy out of the live path failed: %v (remove it by hand)", to, err)
	} else {
		r.Logs.Agentf("migrated the state of %s to %s; this agent no longer holds it (any agent of the cluster runs the config now); the old local copy is kept at %s", cfg.Name, to, kept)
	}
	return store.Outcome{}, true
}

func ptrVersion(r *reconciler.Run, cfg store.Config) int {
	if v := r.Deployment.ConfigVersion; v != nil {
		return *v
	}
	return cfg.Version
}
