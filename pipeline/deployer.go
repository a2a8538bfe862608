// Package pipeline is the work of a Grape agent on one claimed deployment:
// the product's steps, one file per step, run in this order by
// Deployer.Execute (the reconciler's Work):
//
//	render.go     validate the intent against the templates, render the root module
//	commit.go     commit the rendering to the audit repository (and push)
//	terraform.go  check out exactly that commit, terraform init and plan
//	afterplan.go  the after-plan point: what must hold before a plan is applied
//	terraform.go  park for approval, or apply the saved plan and read outputs
//	drift.go      a drift check instead: re-plan the last applied commit
//	state.go      the state guards: audit trail and stack identity before
//	              render, empty state after plan, the local state's holder
//	              and kept versions
//	lock.go       stale state locks an earlier run left behind
//	disk.go       a full disk on the agent's machine
//
// pipeline.New (pipeline.go) wires it from the agent's settings. The claim
// loop that runs it — leases, heartbeats, rescue, drain — is package
// reconciler, which knows nothing of these steps.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/uuid"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/policy"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// Deployer is the Work of a Grape agent: for one claimed deployment it
// renders the config's intent through the golden templates, commits the
// rendering to the audit repository, and runs terraform on exactly that
// commit — one file per step (see the package doc).
type Deployer struct {
	// Templates returns the template set to render with (the embedded one,
	// a directory, or a git checkout that may move between deployments).
	Templates func(ctx context.Context) (*render.Catalog, error)
	Git       *gitstore.Store
	Runner    *runner.Runner
	// DataDir holds run dirs (runs/<deployment>) and local state
	// (state/<cluster>/<config-id>, package localstate) — never inside the
	// audit repository.
	DataDir string
	// SecretVars are values of sensitive template variables supplied on the
	// agent's side (TF_VAR_<name> in its environment), keyed by root variable
	// name. They reach terraform in a var file in the run dir — never in the
	// commit, the database or a log line.
	SecretVars map[string]string
	// Cost runs the Infracost estimate after plan (--infracost).
	Cost bool
	// Policy judges every plan before it is applied (nil: no policies).
	Policy *policy.Engine
	// Redact is the agent's log redactor, applied to policy messages and
	// to what is stored beside the logs (the plan diff, drift details);
	// nil: nothing more is removed than terraform marked sensitive.
	Redact func(string) string
	// Drift records drift reports and acts on them (webhook, auto-remediation).
	Drift DriftRecorder
	// Timing, when set, observes where a deployment spends its time
	// (benchmarks, metrics).
	Timing func(d store.Deployment, mark TimingMark)
	Log    *slog.Logger

	// active are the deployments whose Execute is running here: their run
	// dirs are not Upkeep's to remove.
	activeMu sync.Mutex
	active   map[uuid.UUID]bool
}

// TimingMark names a moment in a deployment's life, for overhead figures.
type TimingMark string

const (
	MarkTerraformStart TimingMark = "terraform_start"
	MarkTerraformEnd   TimingMark = "terraform_end"
)

func (d *Deployer) mark(r *reconciler.Run, m TimingMark) {
	if d.Timing != nil {
		d.Timing(r.Deployment, m)
	}
}

// Execute runs one deployment through the product's steps. Whatever the
// outcome — succeeded, failed, cancelled, timed out, lease lost, even a
// panic — the run dir (the plan, .terraform, secret.tfvars.json) is removed,
// except while the deployment awaits approval: its saved plan is what gets
// applied.
func (d *Deployer) Execute(ctx context.Context, r *reconciler.Run) (o store.Outcome) {
	d.setActive(r.Deployment.ID, true)
	defer d.setActive(r.Deployment.ID, false)
	defer func() {
		if o.Status != store.StatusAwaitingApproval {
			d.removeRunDir(r)
		}
	}()
	// Which engine ran it is part of the record (and of its commit's
	// trailers): a fleet moving from terraform to OpenTofu can tell.
	e := d.Runner.Engine()
	if err := r.Store().SetEngine(ctx, r.Deployment.ID, r.AgentID(), e.Name, e.Version); err != nil {
		return lost(err)
	}
	return d.execute(ctx, r)
}

func (d *Deployer) setActive(id uuid.UUID, on bool) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	if d.active == nil {
		d.active = map[uuid.UUID]bool{}
	}
	if on {
		d.active[id] = true
	} else {
		delete(d.active, id)
	}
}

func (d *Deployer) isActive(id uuid.UUID) bool {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	return d.active[id]
}

func (d *Deployer) execute(ctx context.Context, r *reconciler.Run) store.Outcome {
	dep := r.Deployment
	if dep.Action == store.ActionDrift {
		return d.driftCheck(ctx, r)
	}
	if dep.ApprovedAt != nil && dep.PhaseName() == store.PhaseApply {
		return d.applyApproved(ctx, r)
	}
	cfg, spec, err := d.loadConfig(ctx, r)
	if err != nil {
		var nv *noVersionError
		if errors.As(err, &nv) {
			// A front end queued a version that never existed: bad input.
			return failed(store.KindBadConfig, err.Error())
		}
		return failed(store.KindInternal, err.Error())
	}

	var sha string
	if dep.SourceCommit != nil {
		// Remediation of drift: re-apply a commit that already exists.
		sha = *dep.SourceCommit
		r.Logs.Agentf("applying existing commit %s (no new rendering)", short(sha))
	} else {
		if err := r.SetPhase(ctx, store.PhaseRender); err != nil {
			return lost(err)
		}
		if o, ok := d.checkBeforeRender(ctx, r, cfg, spec); !ok {
			return o
		}
		rendered, o, ok := d.render(ctx, r, cfg, spec)
		if !ok {
			return o
		}
		if err := r.SetPhase(ctx, store.PhaseCommit); err != nil {
			return lost(err)
		}
		if sha, o, ok = d.commit(ctx, r, cfg, rendered); !ok {
			return o
		}
	}
	if err := r.Store().SetCommit(ctx, dep.ID, r.AgentID(), sha); err != nil {
		return lost(err)
	}
	r.Deployment.CommitSHA = &sha
	return d.terraform(ctx, r, cfg, sha)
}

// loadConfig reads the config as it was when the deployment was queued: a
// deployment runs the intent it was queued against, even if someone saved a
// newer version meanwhile (that one gets its own deployment).
func (d *Deployer) loadConfig(ctx context.Context, r *reconciler.Run) (store.Config, json.RawMessage, error) {
	cfg, err := r.Store().GetConfigByID(ctx, r.Deployment.ConfigID)
	if err != nil {
		return store.Config{}, nil, fmt.Errorf("loading config: %w", err)
	}
	spec := cfg.Spec
	if v := r.Deployment.ConfigVersion; v != nil && *v != cfg.Version {
		old, err := r.Store().ConfigAtVersion(ctx, cfg.ID, *v)
		if errors.Is(err, store.ErrNotFound) {
			return store.Config{}, nil, &noVersionError{cluster: cfg.ClusterID, config: cfg.Name, want: *v, current: cfg.Version}
		}
		if err != nil {
			return store.Config{}, nil, fmt.Errorf("loading config %s v%d: %w", cfg.Name, *v, err)
		}
		spec = old.Spec
		r.Logs.Agentf("config %s is at v%d now; this deployment runs v%d, the version it was queued against", cfg.Name, cfg.Version, *v)
	}
	return cfg, spec, nil
}

// noVersionError is a deployment naming a config version that does not
// exist (config_version written by a front end).
type noVersionError struct {
	cluster, config string
	want, current   int
}

func (e *noVersionError) Error() string {
	return fmt.Sprintf("config %s has no version %d (it is at v%d): queue a deployment without config_version, or with one that `grape config history --cluster %s %s` lists", e.config, e.want, e.current, e.cluster, e.config)
}

func (d *Deployer) runDir(r *reconciler.Run) string {
	return filepath.Join(d.DataDir, "runs", r.Deployment.ID.String())
}

// initCache is where a config's .terraform is kept between its runs
// (runner.Job.InitCache), keyed by id like its local state.
func (d *Deployer) initCache(configID uuid.UUID) string {
	return filepath.Join(d.DataDir, initCacheDir, configID.String())
}

// initCacheDir holds one kept .terraform per config under the data dir.
const initCacheDir = "init-cache"

// treeDir is where the run checks out its commit's subtree.
func (d *Deployer) treeDir(r *reconciler.Run) string {
	return filepath.Join(d.runDir(r), "tree")
}

func failed(kind store.ErrorKind, msg string) store.Outcome {
	return store.Outcome{Status: store.StatusFailed, Kind: kind, Error: msg}
}

// lost is the outcome when a phase could not be recorded: usually the lease
// is gone (the agent then writes nothing), else the database failed.
func lost(err error) store.Outcome {
	if errors.Is(err, store.ErrLeaseLost) {
		return failed(store.KindAgentLost, err.Error())
	}
	return failed(store.KindInternal, fmt.Sprintf("recording progress failed: %v", err))
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// removeRunDir deletes a finished run's directory. Plan files and
// .terraform are large and may hold sensitive values; state is elsewhere.
func (d *Deployer) removeRunDir(r *reconciler.Run) {
	if err := os.RemoveAll(d.runDir(r)); err != nil {
		r.Log.Warn("removing run dir failed", "dir", d.runDir(r), "err", err)
	}
}
