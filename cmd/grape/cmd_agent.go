package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/metrics"
	"github.com/grapehq/grape/pipeline"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/statehandoff"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
	"github.com/grapehq/grape/webhook"
)

// agentFlags are the settings of `grape agent` (and of the agents that
// `grape dev` and `grape drift check` run).
type agentFlags struct {
	db           string
	cluster      string
	agentID      string
	dataDir      string
	concurrency  int
	pollInterval time.Duration
	pollOnly     bool
	lease        time.Duration
	heartbeat    time.Duration
	drain        time.Duration
	once         bool

	workspace    string
	workspaceURL string
	gitBranch    string
	gitAuthor    string
	gitSignKey   string
	gitCAFile    string
	templates    templateFlags
	policies     policyFlags

	terraformBinary string
	terraformCLI    string
	providerMirror  string
	envAllow        string
	redactEnv       string
	infracost       bool
	timeoutInit     time.Duration
	timeoutPlan     time.Duration
	timeoutApply    time.Duration
	cancelGrace     time.Duration

	driftSchedule    string
	driftConcurrency int
	notifyURL        string
	waitNotifyAfter  time.Duration
	webhookWait      time.Duration

	// stateHandoffAddr is --state-handoff-addr: where this agent receives
	// states moved to it (`grape state move`); empty: it does not.
	stateHandoffAddr string

	logs logFlags

	// metricsListen is --metrics-listen (agent and dev only).
	metricsListen string
	// metrics, when set by the command, is the registry the agent reports
	// into; buildAgent makes a private one otherwise (grape drift check).
	metrics *metrics.Metrics
}

func (f *agentFlags) register(fs *flag.FlagSet) {
	dbFlag(fs, &f.db)
	fs.StringVar(&f.cluster, "cluster", "", "the cluster this agent serves (required)")
	fs.StringVar(&f.agentID, "agent-id", "", "this agent's id (default: hostname plus a hash of --data-dir, stable across restarts)")
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir(), "where the agent keeps its workspace clone, run dirs, saved plans, the plugin cache and local state")
	fs.IntVar(&f.concurrency, "concurrency", 1, "deployments (and drift checks) run at once by this agent")
	fs.DurationVar(&f.pollInterval, "poll-interval", time.Second, "how often to look for work besides LISTEN/NOTIFY")
	fs.BoolVar(&f.pollOnly, "poll-only", false, "do not LISTEN (for transaction-mode poolers); poll only")
	fs.DurationVar(&f.lease, "lease", 30*time.Second, "how long a claim stays valid without a heartbeat; a lost agent's deployment is taken back after it")
	fs.DurationVar(&f.heartbeat, "heartbeat-interval", 2*time.Second, "how often running deployments renew their lease and check for cancel requests")
	fs.DurationVar(&f.drain, "drain-timeout", 30*time.Minute, "on the first SIGINT/SIGTERM, how long running deployments may take to finish")
	fs.BoolVar(&f.once, "once", false, "claim and run at most one deployment, then exit")

	fs.StringVar(&f.workspace, "workspace", "", "local git repository for the audit trail (default <data-dir>/workspace.git; created if missing)")
	fs.StringVar(&f.workspaceURL, "workspace-url", "", "remote git repository for the audit trail (https://, ssh://, git@host:path, git://); credentials from GRAPE_GIT_TOKEN, GRAPE_GIT_USERNAME/GRAPE_GIT_PASSWORD or GRAPE_GIT_SSH_KEY")
	fs.StringVar(&f.gitBranch, "git-branch", "main", "branch the agent commits to")
	fs.StringVar(&f.gitAuthor, "git-author", "Grape Agent <grape@localhost>", "author and committer of the agent's commits")
	fs.StringVar(&f.gitSignKey, "git-sign-key", "", "armored OpenPGP private key file to sign commits with")
	fs.StringVar(&f.gitCAFile, "git-ca-file", "", "PEM CA bundle for an HTTPS git server with a private CA")
	f.templates.register(fs)
	f.policies.register(fs)

	fs.StringVar(&f.terraformBinary, "terraform-binary", "terraform", "terraform (or OpenTofu) binary")
	fs.StringVar(&f.providerMirror, "provider-mirror", "", "install providers only from this filesystem mirror (offline networks)")
	fs.StringVar(&f.terraformCLI, "terraform-cli-config", "", "your terraform CLI config (credentials, host, network_mirror, …), merged with the agent's own settings; default: TF_CLI_CONFIG_FILE if set (docs/operations.md)")
	fs.StringVar(&f.envAllow, "env-allow", "", "comma-separated extra environment variables (or PREFIX_*) passed to terraform")
	fs.StringVar(&f.redactEnv, "redact-env", "", "comma-separated extra environment variables whose values are secrets to redact from logs")
	fs.BoolVar(&f.infracost, "infracost", false, "estimate cost with infracost after each plan (skipped with one log line if infracost is not installed)")
	fs.DurationVar(&f.timeoutInit, "timeout-init", 10*time.Minute, "terraform init timeout")
	fs.DurationVar(&f.timeoutPlan, "timeout-plan", 30*time.Minute, "terraform plan timeout")
	fs.DurationVar(&f.timeoutApply, "timeout-apply", 2*time.Hour, "terraform apply timeout")
	fs.DurationVar(&f.cancelGrace, "cancel-grace", 30*time.Second, "after SIGINT, how long terraform may take to stop before its process group is killed")

	fs.StringVar(&f.driftSchedule, "drift-schedule", drift.DefaultSchedule, "when idle configs are re-planned for drift: a 5-field cron expression, @every 6h, @daily, or off")
	fs.IntVar(&f.driftConcurrency, "drift-concurrency", 1, "drift checks of this cluster queued or running at once")
	fs.StringVar(&f.notifyURL, "notify-url", "", "POST a JSON event here when drift is detected, a check errors, or drift is resolved")
	fs.DurationVar(&f.waitNotifyAfter, "wait-notify-after", time.Hour, "announce a deployment queued longer than this (log line and deployment.waiting webhook, once); 0: only plans awaiting approval past half their timeout are announced")
	fs.DurationVar(&f.webhookWait, "webhook-wait", 15*time.Second, "with --once (and grape drift check): how long to wait, before exiting, for the run's webhook deliveries; what is left stays for the next agent (0: one attempt, no waiting)")
	fs.StringVar(&f.stateHandoffAddr, "state-handoff-addr", "", "HOST:PORT (reachable by the cluster's other agents) on which this agent opens a one-time TLS listener to receive a local state moved to it with `grape state move`; empty: it cannot receive one (docs/operations.md)")
	f.logs.register(fs)
}

// registerMetrics adds --metrics-listen: only the long-running agents (agent,
// dev) serve it, so only they have the flag.
func (f *agentFlags) registerMetrics(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:9810", "address of /metrics (Prometheus), /healthz and /readyz; loopback unless you say otherwise (e.g. :9810 in a container); empty: not served")
}

func defaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" { // systemd StateDirectory=
		return d
	}
	return ".grape"
}

// id is stable for one machine and data dir, so a restarted agent finds the
// plans it saved for approval.
func (f *agentFlags) id() string {
	if f.agentID != "" {
		return f.agentID
	}
	host, _ := os.Hostname()
	abs, _ := filepath.Abs(f.dataDir)
	sum := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("%s-%s", host, hex.EncodeToString(sum[:])[:8])
}

func (f *agentFlags) validate() error {
	if f.cluster == "" {
		return usagef("--cluster is required")
	}
	if err := store.ValidateClusterID(f.cluster); err != nil {
		return usagef("--cluster: %v", err)
	}
	checks := []struct {
		bad bool
		msg string
	}{
		{f.concurrency < 1 || f.concurrency > 64, fmt.Sprintf("--concurrency: want 1 to 64, got %d", f.concurrency)},
		{f.pollInterval < 10*time.Millisecond, fmt.Sprintf("--poll-interval: want at least 10ms, got %s", f.pollInterval)},
		{f.lease < 3*time.Second, fmt.Sprintf("--lease: want at least 3s, got %s", f.lease)},
		{f.heartbeat <= 0 || f.heartbeat*2 > f.lease, fmt.Sprintf("--heartbeat-interval: want more than 0 and at most half of --lease (%s), got %s", f.lease, f.heartbeat)},
		{f.drain <= 0, "--drain-timeout: want more than 0"},
		{f.waitNotifyAfter < 0, fmt.Sprintf("--wait-notify-after: want 0 (off) or more, got %s", f.waitNotifyAfter)},
		{f.webhookWait < 0, fmt.Sprintf("--webhook-wait: want 0 or more, got %s", f.webhookWait)},
		{f.driftConcurrency < 1, fmt.Sprintf("--drift-concurrency: want at least 1, got %d", f.driftConcurrency)},
		{f.dataDir == "", "--data-dir: required"},
		{f.workspace != "" && f.workspaceURL != "", "--workspace and --workspace-url are exclusive: a local repository or a remote one"},
		{f.timeoutInit <= 0 || f.timeoutPlan <= 0 || f.timeoutApply <= 0 || f.cancelGrace <= 0, "--timeout-init, --timeout-plan, --timeout-apply and --cancel-grace must be more than 0"},
	}
	for _, c := range checks {
		if c.bad {
			return usagef("%s", c.msg)
		}
	}
	if f.metricsListen != "" {
		if _, _, err := net.SplitHostPort(f.metricsListen); err != nil {
			return usagef("--metrics-listen: want HOST:PORT (e.g. 127.0.0.1:9810), got %q", f.metricsListen)
		}
	}
	if f.stateHandoffAddr != "" {
		if err := statehandoff.ValidateAddr(f.stateHandoffAddr); err != nil {
			return usagef("--state-handoff-addr: %v", err)
		}
	}
	if _, err := drift.ParseSchedule(f.driftSchedule); err != nil {
		return usagef("--drift-schedule: %v", err)
	}
	if err := f.policies.validate(); err != nil {
		return err
	}
	if _, err := parseAuthor(f.gitAuthor); err != nil {
		return usagef("--git-author: %v", err)
	}
	return nil
}

func parseAuthor(s string) (gitstore.Signature, error) {
	name, rest, ok := strings.Cut(s, "<")
	email, _, ok2 := strings.Cut(rest, ">")
	if !ok || !ok2 || strings.TrimSpace(name) == "" || !strings.Contains(email, "@") {
		return gitstore.Signature{}, fmt.Errorf("want \"Name <email>\", got %q", s)
	}
	return gitstore.Signature{Name: strings.TrimSpace(name), Email: strings.TrimSpace(email)}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// agentParts is a built agent and what it needs to shut down.
type agentParts struct {
	agent   *reconciler.Agent
	drift   *drift.Service
	handoff *statehandoff.Service
	close   func()
}

// buildAgent turns the flags into the pipeline's and the claim loop's
// settings and builds both; package pipeline does the wiring. n is the
// process's one LISTEN connection (nil: the agent opens its own).
func buildAgent(ctx context.Context, f *agentFlags, st *store.Store, pool *pgxpool.Pool, n *notify.Notifier, log *slog.Logger, extraEnv map[string]string) (*agentParts, error) {
	author, _ := parseAuthor(f.gitAuthor)
	m := f.metrics
	if m == nil {
		m = metrics.New(grapeVersion())
	}
	sched, _ := drift.ParseSchedule(f.driftSchedule)
	refresh := time.Duration(0)
	if f.templates.gitURL != "" {
		refresh = time.Minute // a platform team's new templates are picked up
	}
	p, err := pipeline.New(ctx, pipeline.Config{
		ClusterID: f.cluster, AgentID: f.id(), DataDir: f.dataDir,
		Templates: f.templates.catalog, TemplatesRefresh: refresh, TemplatesOrigin: redact.URL(f.templates.gitURL),
		Git: gitstore.Options{Dir: f.workspace, URL: f.workspaceURL, Branch: f.gitBranch, Auth: gitstore.AuthFromEnv(),
			CAFile: f.gitCAFile, Author: author, SignKeyFile: f.gitSignKey},
		Runner: runner.Config{TerraformBinary: f.terraformBinary, CLIConfigFile: f.terraformCLI, ProviderMirror: f.providerMirror,
			EnvAllowlist: splitList(f.envAllow), ExtraEnv: extraEnv, Infracost: f.infracost,
			Timeouts: runner.Timeouts{Init: f.timeoutInit, Plan: f.timeoutPlan, Apply: f.timeoutApply, Grace: f.cancelGrace}},
		Policies: f.policies.sources(""), PolicyOptions: f.policies.options(),
		RedactEnv: splitList(f.redactEnv), NotifyURL: f.notifyURL, DriftSchedule: sched, DriftConcurrency: f.driftConcurrency,
		Store: st, Pool: pool, Metrics: m, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	agent, err := reconciler.New(st, pool.Config().ConnString(), p, reconciler.Options{
		ClusterID: f.cluster, AgentID: f.id(), Hostname: hostname(), Version: grapeVersion(),
		Concurrency: f.concurrency, PollInterval: f.pollInterval, PollOnly: f.pollOnly, Notifier: n,
		Lease: f.lease, HeartbeatInterval: f.heartbeat, DrainTimeout: f.drain, Once: f.once,
		WaitNotifyAfter: f.waitNotifyAfter, Logger: log, Observer: p.Notes.Observer(m), Logs: p.OpenLogs,
	})
	if err != nil {
		p.Close()
		return nil, err
	}
	m.SetRunning(agent.Running)
	var moves *notify.Notifier
	if !f.pollOnly {
		moves = n
	}
	handoff := statehandoff.New(statehandoff.Options{Store: st, Notifier: moves, ClusterID: f.cluster, AgentID: f.id(),
		State: localstate.Dir{DataDir: f.dataDir}, Addr: f.stateHandoffAddr, Logger: log})
	return &agentParts{agent: agent, drift: p.Drift, handoff: handoff, close: p.Close}, nil
}

func init() {
	register(&command{
		name:    "agent",
		summary: "run the Grape agent for one cluster: claim queued deployments and run them",
		long: `The agent only makes outbound connections (PostgreSQL, the git server, the
cloud APIs). First SIGINT/SIGTERM: stop claiming and let running deployments
finish (up to --drain-timeout). Second: cancel them (they end failed with
"agent shut down") and exit.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var f agentFlags
			f.register(fs)
			f.registerMetrics(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if err := f.validate(); err != nil {
					return err
				}
				log, err := f.logs.logger(cio.stderr)
				if err != nil {
					return err
				}
				// Up before the database, so a supervisor sees a live process
				// that is not ready while the agent waits for its database.
				health, stopOps, err := serveOps(&f, log)
				if err != nil {
					return err
				}
				defer stopOps()
				st, pool, err := openStoreRetrying(ctx, f.db, log)
				if err != nil {
					return err
				}
				defer pool.Close()
				// The process's one LISTEN connection (connected on first use).
				n, err := notify.New(pool.Config().ConnString(), notify.Options{Name: "grape-agent", Logger: log})
				if err != nil {
					return err
				}
				parts, err := buildAgent(ctx, &f, st, pool, n, log, nil)
				if err != nil {
					return err
				}
				defer parts.close()
				health.SetChecks(metrics.DrainCheck(ctx.Done()), metrics.DatabaseCheck(pool), metrics.ListenerCheck(parts.agent.Listening))
				stop := abortOnSecondSignal(parts.agent.Abort)
				defer stop()
				if !f.once && f.driftSchedule != drift.Off {
					driftCtx, cancel := context.WithCancel(ctx)
					defer cancel()
					go parts.drift.Run(driftCtx)
				}
				if !f.once {
					// Moves of local state, agent to agent, beside the claim loop.
					moveCtx, cancel := context.WithCancel(ctx)
					defer cancel()
					go func() { _ = parts.handoff.Run(moveCtx) }()
				}
				if f.once {
					// --once delivers its run's events after the run, not beside it.
					head, err := st.NotifyOutboxHead(ctx, f.cluster)
					if err != nil {
						return err
					}
					err = parts.agent.Run(ctx)
					flushWebhooks(ctx, st, &f, head, log)
					return err
				}
				// Webhooks beside the claim loop: a slow receiver never holds up
				// a run. They go on through the drain, so the events of the runs
				// that finish during it go out too.
				stopHooks := deliverWebhooks(context.WithoutCancel(ctx), st, &f, log)
				defer stopHooks()
				return parts.agent.Run(ctx)
			}
		},
	})
}

// deliverWebhooks delivers the cluster's webhook events in the background
// until stop is called.
func deliverWebhooks(ctx context.Context, st *store.Store, f *agentFlags, log *slog.Logger) (stop func()) {
	hookCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = webhook.New(st, webhook.Options{ClusterID: f.cluster, Logger: log}).Run(hookCtx)
	}()
	return func() { cancel(); <-done }
}

// flushWebhooks delivers, for at most --webhook-wait, the events the cluster
// produced after the outbox stood at head, before a one-run process exits.
// It never fails the run: an interrupted process or a dead receiver leaves
// the events in the outbox for the next agent, and says so.
func flushWebhooks(ctx context.Context, st *store.Store, f *agentFlags, head int64, log *slog.Logger) {
	if ctx.Err() != nil {
		return // interrupted: exit now; the outbox keeps the events
	}
	d := webhook.New(st, webhook.Options{ClusterID: f.cluster, Logger: log})
	settled, left, err := d.Flush(ctx, head, f.webhookWait)
	switch {
	case err != nil:
		log.Warn("delivering this run's webhook events failed; they stay in the outbox for the next agent of the cluster", "err", err)
	case left.Count > 0:
		log.Warn("webhook events not delivered before exit (receiver down or slow?); they stay in the outbox for the next agent of the cluster",
			"pending", left.Count, "waited", f.webhookWait, "last_error", left.LastError)
	case settled > 0:
		log.Info("webhook events delivered", "events", settled)
	}
}

// serveOps creates the agent's metrics (f.metrics) and serves them with
// /healthz and /readyz on --metrics-listen, unless it is empty. /readyz says
// "starting" until the caller sets its checks. stop ends the server; callers
// defer it first, so it outlives the drain.
func serveOps(f *agentFlags, log *slog.Logger) (health *metrics.Health, stop func(), err error) {
	f.metrics = metrics.New(grapeVersion())
	health = metrics.NewHealth(f.metrics.Handler())
	if f.metricsListen == "" {
		return health, func() {}, nil
	}
	srv, err := metrics.Listen(f.metricsListen, health, log)
	if err != nil {
		return nil, nil, err
	}
	log.Info("serving metrics and health endpoints", "metrics", "http://"+srv.Addr()+"/metrics", "healthz", "/healthz", "readyz", "/readyz")
	f.metricsListen = srv.Addr() // the real port when it was :0
	return health, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	}, nil
}

// abortOnSecondSignal calls abort on the second SIGINT/SIGTERM. The first one
// cancels the command's context (main's NotifyContext) and starts the drain.
func abortOnSecondSignal(abort func()) (stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-ch:
				n++
				if n == 2 {
					abort()
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
