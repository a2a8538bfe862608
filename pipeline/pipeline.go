package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/auditnote"
	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/metrics"
	"github.com/grapehq/grape/policy"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// Config is what an agent's pipeline is built from: the agent's settings,
// already parsed (cmd/grape turns flags into it), and the process's
// database handles.
type Config struct {
	ClusterID string
	AgentID   string
	// DataDir holds the workspace clone, run dirs, spill files, the plugin
	// cache, the template cache and local state.
	DataDir string

	// Templates loads the template set; cacheDir holds a git checkout
	// between loads.
	Templates func(ctx context.Context, cacheDir string) (*render.Catalog, error)
	// TemplatesRefresh: 0 loads the set once (embedded, a directory);
	// otherwise it is loaded again when older (a git source).
	TemplatesRefresh time.Duration
	// TemplatesOrigin names the source in errors (passwords redacted).
	TemplatesOrigin string

	// Git opens the audit repository; Dir defaults to <DataDir>/workspace.git.
	Git gitstore.Options
	// Runner runs terraform; DataDir is set to DataDir.
	Runner runner.Config

	// Policies judge every plan before it is applied or parked for
	// approval (the default pack, --policy-dir, --policy-git); none
	// selected: no check. They are compiled once, here: a policy that does
	// not compile stops the agent with file:line. A git source is cached
	// in <DataDir>/policies.
	Policies      policy.Sources
	PolicyOptions policy.Options

	// RedactEnv names extra environment variables whose values are secrets.
	RedactEnv []string
	// Environ is the agent's environment, where TF_VAR_<name> values of
	// sensitive template variables come from (default os.Environ()).
	Environ []string

	// NotifyURL receives drift events; DriftSchedule and DriftConcurrency
	// drive the drift scheduler.
	NotifyURL        string
	DriftSchedule    drift.Schedule
	DriftConcurrency int

	Store *store.Store
	// Pool is where log streams COPY their lines.
	Pool *pgxpool.Pool
	// Metrics observes drift checks and log streams (nil: a private registry).
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Pipeline is an agent's Work with what it needs around it: the log stream
// opener (redaction, spill and its cleanup) and the drift scheduler.
type Pipeline struct {
	*Deployer
	// Drift queues drift checks of idle configs when they are due.
	Drift *drift.Service
	// Notes writes every end into its commit's git note; its Observer wakes
	// it after each run.
	Notes     *auditnote.Writer
	stopNotes func()
	git       *gitstore.Store
	red       *redact.Redactor
	pool      *pgxpool.Pool
	m         *metrics.Metrics
	spill     string
	store     *store.Store
}

var (
	_ reconciler.Work     = (*Pipeline)(nil)
	_ reconciler.Upkeeper = (*Pipeline)(nil)
)

// New builds the pipeline: it loads the template set, opens the audit
// repository, checks terraform, ends processes a dead agent's terraform
// left running and removes run dirs no deployment needs any more.
func New(ctx context.Context, c Config) (*Pipeline, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Environ == nil {
		c.Environ = os.Environ()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New("")
	}
	log := c.Logger.With("cluster_id", c.ClusterID, "agent_id", c.AgentID)
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating --data-dir %s: %w", c.DataDir, err)
	}
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolving --data-dir %s: %w", c.DataDir, err)
	}

	templates := templateSource(c, filepath.Join(dataDir, "templates"))
	cat, err := templates(ctx)
	if err != nil {
		return nil, err
	}
	log.Info("template set loaded", "version", cat.Version, "digest", cat.Digest, "modules", cat.ModuleNames())

	gopts := c.Git
	if gopts.Dir == "" {
		gopts.Dir = filepath.Join(dataDir, "workspace.git")
	}
	gopts.Logger = log
	git, err := gitstore.Open(ctx, gopts)
	if err != nil {
		return nil, fmt.Errorf("opening the audit repository: %w", err)
	}
	rc := c.Runner
	rc.DataDir, rc.Logger = dataDir, log
	// NewContext detects the engine (terraform or OpenTofu) and logs it.
	tf, err := runner.NewContext(ctx, rc)
	if err != nil {
		git.Close()
		return nil, fmt.Errorf("--terraform-binary %s: %w", rc.TerraformBinary, err)
	}
	// A workspace that grew loose objects under an older agent is packed
	// once now; later, commits keep it packed.
	if _, err := git.Maintain(ctx); err != nil {
		log.Warn("packing the audit repository failed; retried after the next commit", "err", err)
	}

	runs := filepath.Join(dataDir, "runs")
	// Providers of a terraform that died with a killed agent run on; end
	// them before their run dirs go and before anything else runs.
	for _, o := range runner.KillOrphans(runs) {
		log.Warn("killed a process a dead agent's terraform left running", "pid", o.PID, "name", o.Name, "dir", o.Dir)
	}
	removeLeftovers(ctx, c.Store, runs, log)

	red := secretRedactor(c.Environ, c.RedactEnv, cat)
	if skipped := red.Skipped(); len(skipped) > 0 {
		log.Warn("secrets too short to redact safely are not redacted from logs", "names", skipped)
	}
	judge, err := loadPolicies(ctx, c, dataDir, log)
	if err != nil {
		git.Close()
		return nil, err
	}

	svc := &drift.Service{Store: c.Store, Cluster: c.ClusterID, Default: c.DriftSchedule, Concurrency: c.DriftConcurrency, Log: log}
	recorder := &drift.Recorder{Store: c.Store, NotifyURL: c.NotifyURL, Log: log, Observe: func(r store.DriftReport) {
		c.Metrics.DriftChecked(r)
		// A stored report frees a drift slot: the next due check starts
		// now, not at the next retry tick.
		svc.Wake()
	}}
	dep := &Deployer{Templates: templates, Git: git, Runner: tf, DataDir: dataDir, Cost: rc.Infracost,
		Policy: judge, Redact: red.Redact,
		SecretVars: secretVars(c.Environ, cat), Drift: recorder, Log: log}
	p := &Pipeline{Deployer: dep, Drift: svc, git: git, red: red, pool: c.Pool, m: c.Metrics, spill: filepath.Join(dataDir, "spill"), store: c.Store}
	p.startNotes(ctx, c, tf.Engine().String(), log)
	return p, nil
}

// loadPolicies compiles the agent's policies once (nil when none are
// selected). A git source keeps its checkout in <dataDir>/policies.
func loadPolicies(ctx context.Context, c Config, dataDir string, log *slog.Logger) (*policy.Engine, error) {
	src := c.Policies
	if src.Empty() {
		log.Warn("no policies: plans are applied without a policy check (the default pack is off and no --policy-dir or --policy-git is set)")
		return nil, nil
	}
	if src.GitURL != "" && src.CacheDir == "" {
		src.CacheDir = filepath.Join(dataDir, "policies")
	}
	e, err := policy.Load(ctx, src, c.PolicyOptions)
	if err != nil {
		return nil, fmt.Errorf("loading policies: %w", err)
	}
	for _, set := range e.Sets() {
		digest, _ := e.Digest(set)
		log.Info("policies loaded", "set", set, "digest", digest, "rules", len(e.Rules(set)), "files", len(e.Files(set)))
	}
	return e, nil
}

// startNotes runs the git notes writer: every end goes into its commit's
// note; pending notes are pushed at start, after each run and every minute.
func (p *Pipeline) startNotes(ctx context.Context, c Config, engine string, log *slog.Logger) {
	p.Notes = auditnote.New(auditnote.Writer{Git: p.git, Store: c.Store, ClusterID: c.ClusterID, Redactor: p.red,
		Engine: engine, Pending: c.Metrics.SetNotesPending, Log: log})
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); p.Notes.Run(ctx) }()
	p.stopNotes = func() {
		cancel()
		<-done
		// The last runs' notes, before the process goes.
		sweepCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Notes.Sweep(sweepCtx); err != nil {
			log.Warn("writing the last git notes failed; the next start writes them", "err", err)
		}
	}
}

// Close writes the last git notes and releases the audit repository.
func (p *Pipeline) Close() {
	p.stopNotes()
	p.git.Close()
}

// OpenLogs is the agent's reconciler.LogOpener: a redacting log stream that
// spills to <data-dir>/spill/<deployment> while the database is away.
func (p *Pipeline) OpenLogs(ctx context.Context, d store.Deployment) (reconciler.LogSink, error) {
	dir := filepath.Join(p.spill, d.ID.String())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spill dir: %w", err)
	}
	// logstream adds deployment_id itself.
	s, err := logstream.Open(ctx, p.pool, d.ID, logstream.Options{SpillDir: dir, Redactor: p.red, Logger: p.Log.With("config_id", d.ConfigID)})
	if err != nil {
		return nil, err
	}
	return spillCleanup{Stream: s, dir: dir, untrack: p.m.TrackLogStream(s)}, nil
}

// spillCleanup removes a deployment's spill dir once every line is stored,
// and moves the stream's counts into the closed-stream totals of the metrics.
type spillCleanup struct {
	*logstream.Stream
	dir     string
	untrack func()
}

func (s spillCleanup) Close(ctx context.Context) error {
	err := s.Stream.Close(ctx)
	s.untrack()
	if err != nil {
		return err
	}
	return os.RemoveAll(s.dir)
}

// Upkeep is the reconciler's periodic housekeeping call: it keeps the audit
// repository packed, and it removes the run
// dirs (saved plan, secret.tfvars.json) of deployments that were parked for
// approval here and have ended elsewhere — the approval expired, or someone
// rejected or cancelled it while this agent was not running it.
func (p *Pipeline) Upkeep(ctx context.Context) {
	// Merging the workspace's packs waits for a commit in progress and is
	// bounded (gitstore's mergeCap): here, between deployments, not in one.
	if _, err := p.git.Maintain(ctx); err != nil && ctx.Err() == nil {
		p.Log.Warn("packing the audit repository failed", "err", err)
	}
	p.forgetGoneConfigs(ctx)
	runs := filepath.Join(p.DataDir, "runs")
	entries, err := os.ReadDir(runs)
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		id, err := uuid.Parse(e.Name())
		if err != nil || p.isActive(id) {
			continue
		}
		d, err := p.store.GetDeployment(ctx, id)
		if err != nil || !d.Status.Final() {
			continue // parked, or unreadable now: the next pass looks again
		}
		dir := filepath.Join(runs, e.Name())
		if err := os.RemoveAll(dir); err != nil {
			p.Log.Warn("removing the run dir of an ended deployment failed", "dir", dir, "err", err)
			continue
		}
		p.Log.Info("discarded the saved plan of a deployment that ended while parked", "deployment_id", id, "status", d.Status, "error", ptr.Deref(d.Error))
	}
}

// forgetGoneConfigs removes the kept init (.terraform) of configs that no
// longer exist, and what a crash left half-written there.
func (p *Pipeline) forgetGoneConfigs(ctx context.Context) {
	root := filepath.Join(p.DataDir, initCacheDir)
	entries, err := os.ReadDir(root)
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		id, perr := uuid.Parse(e.Name())
		if perr == nil {
			_, err := p.store.GetConfigByID(ctx, id)
			if !errors.Is(err, store.ErrNotFound) {
				continue // there, or unreadable now: the next pass looks again
			}
		}
		// A config that is gone, or a saveInit's temporary left by a crash.
		if err := runner.ForgetInit(filepath.Join(root, e.Name())); err != nil {
			p.Log.Warn("removing an init cache", "err", err)
		}
	}
}

// removeLeftovers deletes the run dirs a previous agent process left behind
// (it was killed, or its machine went down) — they may hold
// secret.tfvars.json — except those of deployments still awaiting approval,
// whose saved plan is applied after `grape approve`. A dir whose deployment
// cannot be read now is kept, with a warning: the next start looks again.
func removeLeftovers(ctx context.Context, st *store.Store, runs string, log *slog.Logger) {
	entries, err := os.ReadDir(runs)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("listing leftover run dirs failed", "dir", runs, "err", err)
		}
		return
	}
	for _, e := range entries {
		dir := filepath.Join(runs, e.Name())
		id, err := uuid.Parse(e.Name())
		if err == nil && st != nil {
			d, gerr := st.GetDeployment(ctx, id)
			switch {
			case gerr == nil && d.Status == store.StatusAwaitingApproval:
				continue
			case gerr != nil && !errors.Is(gerr, store.ErrNotFound):
				log.Warn("keeping a leftover run dir: reading its deployment failed", "dir", dir, "err", gerr)
				continue
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("removing a leftover run dir failed", "dir", dir, "err", err)
			continue
		}
		log.Info("removed a leftover run dir", "dir", dir)
	}
}

// secretRedactor collects what must never reach a log line: secret-looking
// environment variables, the operator's --redact-env names, and the values
// of sensitive template variables supplied agent-side as TF_VAR_*.
func secretRedactor(environ, redactEnv []string, cat *render.Catalog) *redact.Redactor {
	extra := append([]string(nil), redactEnv...)
	for _, name := range cat.SensitiveVariables() {
		extra = append(extra, "TF_VAR_"+name)
	}
	return redact.FromEnviron(environ, extra)
}

// secretVars reads the values of sensitive template variables from the
// agent's own environment (TF_VAR_<name>). terraform-exec does not pass
// TF_VAR_* to terraform, so the deployer hands them over in a var file.
func secretVars(environ []string, cat *render.Catalog) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	out := map[string]string{}
	for _, name := range cat.SensitiveVariables() {
		if v, ok := env["TF_VAR_"+name]; ok {
			out[name] = v
		}
	}
	return out
}

// templateSource returns the template set for each deployment: loaded once
// for the embedded set or a directory; for a git repository, fetched again
// when older than TemplatesRefresh so a platform team's new templates are
// picked up.
func templateSource(c Config, cacheDir string) func(context.Context) (*render.Catalog, error) {
	var mu sync.Mutex
	var cat *render.Catalog
	var loaded time.Time
	return func(ctx context.Context) (*render.Catalog, error) {
		mu.Lock()
		defer mu.Unlock()
		if cat != nil && (c.TemplatesRefresh <= 0 || time.Since(loaded) < c.TemplatesRefresh) {
			return cat, nil
		}
		fresh, err := c.Templates(ctx, cacheDir)
		if err != nil {
			if cat != nil {
				return nil, fmt.Errorf("refreshing templates from %s (the previous set is not used: a deployment renders with the set it reports): %w", c.TemplatesOrigin, err)
			}
			return nil, err
		}
		cat, loaded = fresh, time.Now()
		return cat, nil
	}
}
