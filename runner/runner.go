package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/terraform-exec/tfexec"

	"github.com/grapehq/grape/internal/errkind"
)

// Config is fixed for the agent's lifetime.
type Config struct {
	// TerraformBinary is a path or a name looked up on PATH; "" means
	// "terraform". It may be terraform or OpenTofu: New detects which.
	TerraformBinary string
	// CLIConfigFile is the operator's own terraform CLI config
	// (--terraform-cli-config); "" takes TF_CLI_CONFIG_FILE from the agent's
	// environment, if set. Its blocks are kept in the config the runner
	// writes (see cliConfig).
	CLIConfigFile string
	// DataDir holds the shared plugin cache (<DataDir>/plugin-cache) and the
	// CLI config the runner writes (<DataDir>/terraformrc).
	DataDir string
	// ProviderMirror, when set, is the only place providers are installed
	// from (a filesystem_mirror in the CLI config).
	ProviderMirror string
	// EnvAllowlist adds variable names, or prefixes ending in *, that are
	// passed from the agent's environment on top of the built-in allowlist.
	EnvAllowlist []string
	// ExtraEnv is set explicitly in every terraform environment.
	ExtraEnv map[string]string
	Timeouts Timeouts
	// Infracost enables the cost estimate after plan.
	Infracost bool
	Logger    *slog.Logger
}

// Timeouts bound each phase; zero values take the defaults.
type Timeouts struct {
	Init    time.Duration // default 10m (includes waiting for the plugin cache)
	Plan    time.Duration // default 30m (plan and show -json of the plan)
	Apply   time.Duration // default 2h
	Outputs time.Duration // default 5m
	Cost    time.Duration // default 5m (show -json and infracost)
	// Grace is how long terraform may take to stop after SIGINT before its
	// whole process group is killed. Default 30s.
	Grace time.Duration
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Init, 10*time.Minute)
	def(&t.Plan, 30*time.Minute)
	def(&t.Apply, 2*time.Hour)
	def(&t.Outputs, 5*time.Minute)
	def(&t.Cost, 5*time.Minute)
	def(&t.Grace, 30*time.Second)
	return t
}

// Runner runs terraform commands for jobs. It is safe for concurrent use by
// jobs in different directories.
type Runner struct {
	cfg       Config
	bin       string
	cacheDir  string
	cliConfig string
	environ   []string // the agent's environment, read once in New
	t         Timeouts
	log       *slog.Logger
	idle      tfPool
	engine    Engine
}

// New is NewContext without a deadline of the caller's.
func New(cfg Config) (*Runner, error) {
	return NewContext(context.Background(), cfg)
}

// NewContext checks the configuration, detects the engine (terraform or
// OpenTofu) and its version, creates the plugin cache and writes the CLI
// config every terraform command will use.
func NewContext(ctx context.Context, cfg Config) (*Runner, error) {
	bin := cfg.TerraformBinary
	if bin == "" {
		bin = "terraform"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("terraform binary %q not found: install terraform or pass its path (--terraform-binary): %w", bin, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("resolving terraform binary: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("runner data directory not set")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolving data directory: %w", err)
	}
	cfg.DataDir = dataDir
	mirror := cfg.ProviderMirror
	if mirror != "" {
		if mirror, err = filepath.Abs(mirror); err != nil {
			return nil, fmt.Errorf("resolving provider mirror: %w", err)
		}
		fi, err := os.Stat(mirror)
		if err != nil {
			return nil, fmt.Errorf("provider mirror: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("provider mirror %s is not a directory", mirror)
		}
		cfg.ProviderMirror = mirror
	}
	if err := validateAllow(cfg.EnvAllowlist); err != nil {
		return nil, err
	}
	if _, err := BuildEnv(EnvSpec{Extra: cfg.ExtraEnv}); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	engine, err := DetectEngine(dctx, path)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("detecting the engine of %s: %w", path, err)
	}
	log.Info("IaC engine", "engine", engine.Name, "version", engine.Version, "binary", path)
	var mirrorFor func(string) (string, error)
	if engine.Name == EngineOpenTofu {
		layouts := map[string]string{}
		mirrorFor = func(m string) (string, error) {
			if out, ok := layouts[m]; ok {
				return out, nil
			}
			// One layout per mirror path (the flag's, the file's).
			out, err := tofuMirror(filepath.Join(dataDir, fmt.Sprintf("tofu-mirror-%d", len(layouts))), m)
			layouts[m] = out
			return out, err
		}
		if mirror != "" {
			if mirror, err = mirrorFor(mirror); err != nil {
				return nil, err
			}
		}
	}
	op, err := operatorCLIConfig(cfg.CLIConfigFile, log)
	if err != nil {
		return nil, err
	}
	cacheDir := filepath.Join(dataDir, "plugin-cache")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating plugin cache: %w", err)
	}
	body, err := cliConfig(cacheDir, mirror, op, mirrorFor)
	if err != nil {
		return nil, err
	}
	cliPath := filepath.Join(dataDir, "terraformrc")
	// 0600: an operator's config may hold registry credentials.
	if err := writeFileAtomic(cliPath, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("writing terraform CLI config: %w", err)
	}
	if op != nil {
		log.Info("terraform CLI config merged", "file", op.name, "into", cliPath)
	}
	return &Runner{
		cfg:       cfg,
		bin:       path,
		cacheDir:  cacheDir,
		cliConfig: cliPath,
		environ:   os.Environ(),
		t:         cfg.Timeouts.withDefaults(),
		log:       log,
		engine:    engine,
	}, nil
}

// operatorCLIConfig reads the operator's CLI config: the named file, else an
// inherited TF_CLI_CONFIG_FILE; nil when there is neither. A missing
// inherited file is ignored, as terraform ignores it; a named one is an error.
func operatorCLIConfig(name string, log *slog.Logger) (*operatorConfig, error) {
	inherited := name == ""
	if inherited {
		name = os.Getenv("TF_CLI_CONFIG_FILE")
	}
	if name == "" {
		return nil, nil
	}
	body, err := os.ReadFile(name)
	switch {
	case err != nil && inherited && errors.Is(err, os.ErrNotExist):
		log.Warn("TF_CLI_CONFIG_FILE names a file that does not exist; ignored, as terraform would", "file", name)
		return nil, nil
	case err != nil && inherited:
		return nil, fmt.Errorf("reading the terraform CLI config named by TF_CLI_CONFIG_FILE: %w", err)
	case err != nil:
		return nil, fmt.Errorf("reading the terraform CLI config named by --terraform-cli-config: %w", err)
	}
	return &operatorConfig{name: name, body: body}, nil
}

// Binary is the absolute path of the terraform binary the runner uses.
func (r *Runner) Binary() string { return r.bin }

// CLIConfigFile is the path of the CLI config the runner wrote.
func (r *Runner) CLIConfigFile() string { return r.cliConfig }

// Engine is the engine behind the binary and its version, detected by New.
func (r *Runner) Engine() Engine { return r.engine }

// Version is the engine's version, e.g. "1.11.4", detected by New.
func (r *Runner) Version(context.Context) (string, error) {
	return r.engine.Version, nil
}

// Job is one run directory and where its output goes.
type Job struct {
	// Dir is a fresh directory holding exactly the committed tree (the root
	// module). Everything terraform writes (.terraform, plan, local state
	// unless the backend says otherwise) lands here.
	Dir string
	// BackendConfig is passed to init as -backend-config key=value. Values
	// are never logged.
	BackendConfig map[string]string
	// MigrateState makes init copy the state from the backend the working
	// dir was initialised with to the configured one (-force-copy, which
	// implies -migrate-state without prompts).
	MigrateState bool
	// VarFiles are extra -var-file arguments for plan, relative to Dir.
	// *.auto.tfvars(.json) files in Dir are read by terraform without this.
	VarFiles []string
	// Stdout receives terraform's output, one line per write; Stderr its
	// stderr. Calls are serialized.
	Stdout, Stderr io.Writer
	// Agent receives the runner's own lines ("terraform init", "cost
	// estimate skipped: …"), serialized with Stdout and Stderr.
	Agent func(msg string)
	// Env adds per-job variables (same rules as Config.ExtraEnv).
	Env map[string]string
	// InitCache, when set, is a directory that keeps this root module's
	// .terraform between runs (see initcache.go): a run whose lock file,
	// .tf files, backend config, CLI config and engine match the kept one
	// skips terraform init. One directory per root module (config); the
	// caller removes it with the config (ForgetInit).
	InitCache string
}

// killBackstop is added to Grace for terraform-exec's own WaitDelay, after
// which it SIGKILLs the terraform pid. The runner's group kill at Grace
// normally comes first; this only matters if the group could not be found.
const killBackstop = 5 * time.Second

// terraform builds a terraform-exec handle for dir with the job's
// environment. No stdout is attached: terraform-exec copies its version
// check and JSON commands (show, output) to it.
func (r *Runner) terraform(dir string, jobEnv map[string]string) (*tfexec.Terraform, error) {
	env, err := BuildEnv(EnvSpec{
		Environ:       r.environ,
		Allow:         r.cfg.EnvAllowlist,
		Extra:         r.cfg.ExtraEnv,
		Job:           jobEnv,
		CLIConfigFile: r.cliConfig,
	})
	if err != nil {
		return nil, err
	}
	tf := r.idle.take(dir)
	if tf == nil {
		if tf, err = tfexec.NewTerraform(dir, r.bin); err != nil {
			return nil, fmt.Errorf("preparing terraform in %s: %w", dir, err)
		}
	}
	if err := tf.SetEnv(env); err != nil {
		return nil, fmt.Errorf("setting terraform environment: %w", err)
	}
	if err := tf.SetWaitDelay(r.t.Grace + killBackstop); err != nil {
		return nil, fmt.Errorf("setting terraform wait delay: %w", err)
	}
	return tf, nil
}

// tfPool keeps the terraform-exec handles of recently used run directories.
// A handle remembers the terraform version it checked; terraform-exec checks
// it (one `terraform version -json`, ~25 ms) before most commands, so reusing
// the handle saves that process for every phase of a job after the first.
// A handle is used by one phase at a time: take removes it from the pool.
type tfPool struct {
	mu    sync.Mutex
	byDir map[string]*tfexec.Terraform
}

const maxIdleHandles = 128

func (p *tfPool) take(dir string) *tfexec.Terraform {
	p.mu.Lock()
	defer p.mu.Unlock()
	tf := p.byDir[dir]
	delete(p.byDir, dir)
	return tf
}

func (p *tfPool) give(dir string, tf *tfexec.Terraform) {
	// Drop the job's writers: the next phase attaches its own, and the pool
	// must not keep a finished job's log sink alive.
	tf.SetStdout(nil)
	tf.SetStderr(nil)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byDir == nil {
		p.byDir = map[string]*tfexec.Terraform{}
	}
	for d := range p.byDir {
		if len(p.byDir) < maxIdleHandles {
			break
		}
		delete(p.byDir, d) // any one: directories of finished jobs are never asked for again
	}
	p.byDir[dir] = tf
}

// runDir resolves a job directory to the absolute, symlink-free path the
// kernel reports as terraform's cwd.
func runDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("job has no run directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving run directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("run directory %s: %w", dir, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("run directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("run directory %s is not a directory", dir)
	}
	return real, nil
}

// run executes fn (one or more terraform commands of one phase) under the
// phase timeout, watching for cancellation. It returns an *Error of kind
// errkind.Cancelled or errkind.Timeout when the context ended the phase, an *Error
// of the phase's kind for set-up failures, and fn's error otherwise, for the
// caller to classify with the diagnostics it collected.
func (r *Runner) run(ctx context.Context, j Job, s *sink, phase string, timeout time.Duration, fn func(context.Context, *tfexec.Terraform) error) error {
	tf, err := r.terraform(j.Dir, j.Env)
	if err != nil {
		return &Error{Kind: phaseKind(phase), Phase: phase, Msg: fmt.Sprintf("preparing terraform %s failed: %v", phase, err), Err: err}
	}
	timedOut := &phaseTimeout{phase: phase, after: timeout}
	pctx, cancel := context.WithTimeoutCause(ctx, timeout, timedOut)
	defer cancel()

	groups := newGroupSet(j.Dir)
	s.groups = groups
	defer func() { s.groups = nil }()
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watch(pctx, groups, s, done)
	}()
	start := time.Now()
	// Prime terraform-exec's version cache first: its version check would
	// otherwise run with (and print to) the writers fn attaches.
	_, _, err = tf.Version(pctx, false)
	if err == nil {
		err = fn(pctx, tf)
	}
	close(done)
	<-watched
	r.idle.give(j.Dir, tf)
	r.log.Debug("terraform phase finished", "phase", phase, "dir", j.Dir, "duration", time.Since(start), "failed", err != nil)

	if err == nil || pctx.Err() == nil {
		return err
	}
	cause := context.Cause(pctx)
	if errors.Is(cause, timedOut) {
		return &Error{Kind: errkind.Timeout, Phase: phase, Msg: timedOut.Error(), Err: cause}
	}
	return &Error{Kind: errkind.Cancelled, Phase: phase, Msg: fmt.Sprintf("cancelled in %s: %v", phase, cause), Err: cause}
}

// phaseTimeout is the cancellation cause of a phase that ran out of time.
type phaseTimeout struct {
	phase string
	after time.Duration
}

func (p *phaseTimeout) Error() string {
	return fmt.Sprintf("timed out in %s after %s", p.phase, p.after)
}

// Is makes errors.Is(err, context.DeadlineExceeded) hold for timeouts.
func (p *phaseTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// groupSet collects the process groups of a phase's terraform commands.
//
// It looks when terraform prints (its first line comes while it is
// certainly running, so it is found before it could exit) and again when the
// phase is cancelled. Looking only after the cancel would race: a terraform
// that stops within milliseconds of SIGINT can be reaped before the scan,
// and a provisioner child it left behind could then no longer be tied to it.
type groupSet struct {
	dir    string
	mu     sync.Mutex
	groups map[int]bool
	last   time.Time
}

func newGroupSet(dir string) *groupSet {
	return &groupSet{dir: dir, groups: map[int]bool{}}
}

// noticeOutput scans on the first line and then at most once a second: a
// phase runs few commands, and /proc scans are not free.
func (g *groupSet) noticeOutput() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.last.IsZero() && time.Since(g.last) < time.Second {
		return
	}
	g.scanLocked()
}

func (g *groupSet) scan() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.scanLocked()
}

func (g *groupSet) scanLocked() {
	g.last = time.Now()
	for _, pg := range terraformGroups(g.dir) {
		g.groups[pg] = true
	}
}

func (g *groupSet) list() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := make([]int, 0, len(g.groups))
	for pg := range g.groups {
		l = append(l, pg)
	}
	sort.Ints(l)
	return l
}

// watch waits for the phase context to end while terraform runs. Then
// terraform-exec has sent SIGINT to terraform; watch kills terraform's
// process group when terraform is still running after Grace, or as soon as
// terraform exits if anything it started is left behind (a provisioner's
// child, a provider that did not exit).
func (r *Runner) watch(ctx context.Context, g *groupSet, s *sink, done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.agentf("%s: interrupting terraform (SIGINT) so it can stop cleanly and release the state lock; its process group is killed if it is still running in %s",
		context.Cause(ctx), r.t.Grace)
	kill := func() {
		for _, pg := range g.list() {
			if err := killGroup(pg); err != nil {
				r.log.Warn("killing terraform process group", "pgid", pg, "dir", g.dir, "error", err)
			}
		}
	}
	grace := time.NewTimer(r.t.Grace)
	defer grace.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for {
		// Keep looking: terraform may have been starting when ctx ended.
		g.scan()
		select {
		case <-done:
			// terraform has exited and been reaped; its group number stays
			// reserved while any member lives, so killing it is still exact.
			left := 0
			for _, pg := range g.list() {
				left += groupMembers(pg)
			}
			kill()
			switch {
			case killed:
			case left > 0:
				s.agentf("terraform stopped; killed %d process(es) it left running in its process group", left)
			default:
				s.agentf("terraform stopped")
			}
			return
		case <-grace.C:
			killed = true
			kill()
			s.agentf("terraform still running %s after SIGINT: killed its process group %v; a remote state lock may be left behind", r.t.Grace, g.list())
		case <-tick.C:
			if killed {
				kill()
			}
		}
	}
}

// finish turns a phase's error into the Error the caller returns.
func finish(phase string, err error, js *jsonStream) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return classify(phase, js.diags, err)
}

// backendKeys names the -backend-config keys for the log, never values
// (they can hold credentials).
func backendKeys(bc map[string]string) string {
	if len(bc) == 0 {
		return ""
	}
	return " (backend config: " + strings.Join(sortedKeys(bc), ", ") + ")"
}

// inDir resolves p relative to the run directory.
func inDir(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// relTo shows p relative to dir when it is inside it, for log lines.
func relTo(dir, p string) string {
	if rel, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}
