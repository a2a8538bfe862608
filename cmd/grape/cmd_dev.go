package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/grapehq/grape/localenv"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/metrics"
	"github.com/grapehq/grape/portal"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// sampleIntent is the config `grape dev` creates: one VPC, the cheapest
// useful thing to apply (and free against the emulator).
const sampleIntent = `{"region": "eu-central-1", "environment": "dev", "tags": {"owner": "grape-dev"}, "modules": {"vpc": {}}}`

func init() {
	register(&command{
		name:    "dev",
		summary: "the local default: a private PostgreSQL, a sample config, the agent and the portal on this machine",
		long: `Starts everything Grape needs on one machine, under --data-dir:
a private PostgreSQL cluster (the installed server binaries), the schema, a
"local" cluster with a sample config, the agent, and the portal on --listen.
With moto_server installed and no AWS credentials set, terraform talks to the
local AWS emulator (nothing real is created); it never uses real AWS unless you
pass --aws real with your own credentials in the environment.
--once queues one deployment of the sample config, follows it, and exits with
its outcome (make demo). Ctrl-C stops everything it started; the data dir
stays and is reused by the next run.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var f agentFlags
			var aws, listen, action string
			var once, noColor bool
			f.register(fs)
			f.registerMetrics(fs)
			fs.StringVar(&aws, "aws", "auto", "where terraform's AWS calls go: moto (the local emulator), real (your credentials), or auto (moto when installed)")
			fs.StringVar(&listen, "listen", "127.0.0.1:8080", "portal address (empty: no portal)")
			fs.StringVar(&action, "action", "apply", "what --once runs on the sample config: plan, apply or destroy")
			fs.BoolVar(&once, "run-once", false, "alias of --once")
			noColorFlag(fs, &noColor)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if f.dataDir == defaultDataDir() {
					f.dataDir = filepath.Join(defaultDataDir(), "dev")
				}
				if f.cluster == "" {
					f.cluster = "local"
				}
				if f.agentID == "" {
					f.agentID = "dev-agent"
				}
				f.once = f.once || once
				if err := f.validate(); err != nil {
					return err
				}
				act, err := store.ParseAction(action)
				if err != nil {
					return usagef("--action: %v", err)
				}
				return runDev(ctx, cio, &f, aws, listen, act, newLinePrinter(cio, noColor))
			}
		},
	})
}

func runDev(ctx context.Context, cio *cmdIO, f *agentFlags, aws, listen string, action store.Action, p linePrinter) error {
	out := cio.stdout
	log, err := f.logs.logger(cio.stderr)
	if err != nil {
		return err
	}
	health, stopOps, err := serveOps(f, log)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := os.MkdirAll(f.dataDir, 0o755); err != nil {
		return fmt.Errorf("creating --data-dir: %w", err)
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	f.dataDir = dataDir

	// 1. The control plane: a private PostgreSQL unless one was given.
	if f.db == "" {
		fmt.Fprintf(out, "starting a private PostgreSQL in %s ...\n", filepath.Join(dataDir, "postgres"))
		pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: filepath.Join(dataDir, "postgres")})
		if err != nil {
			return fmt.Errorf("starting PostgreSQL (or pass --database-url): %w", err)
		}
		defer func() {
			if err := pg.Stop(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintf(cio.stderr, "stopping PostgreSQL: %v\n", err)
			}
			pg.Close()
		}()
		f.db = pg.SuperuserURL("postgres")
	}
	st, pool, err := openStore(ctx, f.db)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := store.Migrate(ctx, pool); err != nil {
		return err
	}
	if _, err := st.CreateCluster(ctx, f.cluster, "created by grape dev"); err != nil {
		return err
	}
	// One person on one machine requests and approves: four eyes would only
	// stand in the way (docs/security.md).
	if err := st.SetFourEyes(ctx, f.cluster, false); err != nil {
		return err
	}
	cat, err := f.templates.catalog(ctx, "")
	if err != nil {
		return err
	}
	in, err := cat.Validate([]byte(sampleIntent))
	if err != nil {
		return fmt.Errorf("sample intent: %w", err)
	}
	cfg, err := st.GetConfig(ctx, f.cluster, "sample")
	if isNotFound(err) {
		cfg, err = st.UpsertConfig(ctx, f.cluster, "sample", in.JSON(), store.ConfigSettings{})
	}
	if err != nil {
		return err
	}

	// 2. Where terraform's AWS calls go.
	extraEnv, stopAWS, err := devAWS(ctx, cio, aws, dataDir)
	if err != nil {
		return err
	}
	defer stopAWS()

	// 3. The agent, its drift service, and the portal.
	// One LISTEN connection for the agent, the portal and --once's follower.
	n, err := notify.New(f.db, notify.Options{Name: "grape-dev", Logger: log})
	if err != nil {
		return err
	}
	parts, err := buildAgent(ctx, f, st, pool, n, log, extraEnv)
	if err != nil {
		return err
	}
	defer parts.close()
	health.SetChecks(metrics.DrainCheck(ctx.Done()), metrics.DatabaseCheck(pool), metrics.ListenerCheck(parts.agent.Listening))
	stop := abortOnSecondSignal(parts.agent.Abort)
	defer stop()

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	if listen != "" {
		token, url, wait, err := startPortal(runCtx, cio, log, st, n, listen, f.cluster)
		if err != nil {
			return err
		}
		defer wait()
		defer cancelRun()
		fmt.Fprintf(out, "portal:   %s  (sign in with token %s)\n", url, token)
	}
	fmt.Fprintf(out, "database: %s\n", redact.URL(f.db))
	fmt.Fprintf(out, "agent:    %s for cluster %q, data in %s\n", f.id(), f.cluster, dataDir)
	fmt.Fprintf(out, "config:   %s/sample (%s)\n", f.cluster, cfg.ID)
	if f.metricsListen != "" {
		fmt.Fprintf(out, "metrics:  http://%s/metrics  (health: /healthz, /readyz)\n", f.metricsListen)
	}

	agentDone := make(chan error, 1)
	if !f.once {
		go parts.drift.Run(runCtx)
		stopHooks := deliverWebhooks(context.WithoutCancel(ctx), st, f, log)
		defer stopHooks()
		fmt.Fprintf(out, "\nqueue a deployment:  GRAPE_DATABASE_URL='%s' grape deploy --cluster %s --config sample --follow\n", f.db, f.cluster)
		fmt.Fprintf(out, "Ctrl-C stops everything (the data dir is kept).\n")
		go func() { agentDone <- parts.agent.Run(ctx) }()
		return <-agentDone
	}

	head, err := st.NotifyOutboxHead(ctx, f.cluster)
	if err != nil {
		return err
	}
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: f.cluster, ConfigID: cfg.ID, Action: action, RequestedBy: "grape dev"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nqueued %s of the sample config: deployment %s\n\n", action, d.ID)
	go func() { agentDone <- parts.agent.Run(runCtx) }()
	status, err := logstream.Follow(ctx, st, n, d.ID, 0, func(l store.LogLine) error {
		p.line(l)
		return nil
	})
	cancelRun()
	if aerr := <-agentDone; aerr != nil && err == nil {
		err = aerr
	}
	if err != nil {
		return err
	}
	flushWebhooks(ctx, st, f, head, log)
	final, err := st.GetDeployment(context.WithoutCancel(ctx), d.ID)
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	if err := printDeployment(out, final); err != nil {
		return err
	}
	if status != store.StatusSucceeded {
		return exitError{1}
	}
	return nil
}

// devAWS decides, loudly, where terraform's AWS calls go.
// It returns the environment terraform gets and how to stop an emulator.
func devAWS(ctx context.Context, cio *cmdIO, mode, dataDir string) (env map[string]string, stop func(), err error) {
	nothing := func() {}
	hasCreds := cio.getenv("AWS_ACCESS_KEY_ID") != "" || cio.getenv("AWS_PROFILE") != "" || cio.getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != ""
	_, motoErr := exec.LookPath("moto_server")
	switch mode {
	case "auto":
		// With moto installed, auto is --aws moto: start it below.
		if motoErr != nil && hasCreds {
			return nil, nothing, usagef("moto_server is not installed and AWS credentials are set: pass --aws real to let grape dev use your AWS account, or install moto (pip install 'moto[server]') for a zero-risk local run")
		}
		if motoErr != nil {
			return nil, nothing, usagef("no AWS to talk to: install moto (pip install 'moto[server]') for the local emulator, or set your AWS credentials and pass --aws real")
		}
	case "moto":
		if motoErr != nil {
			return nil, nothing, usagef("--aws moto: moto_server is not on PATH (pip install 'moto[server]')")
		}
	case "real":
		if !hasCreds {
			return nil, nothing, usagef("--aws real: no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE or a web identity)")
		}
		fmt.Fprintf(cio.stdout, "\n*** REAL AWS: terraform will create real, billable resources with your credentials ***\n\n")
		return nil, nothing, nil
	default:
		return nil, nothing, usagef("--aws: want moto, real or auto, got %q", mode)
	}
	m, err := localenv.StartMoto(ctx, filepath.Join(dataDir, "moto.log"))
	if err != nil {
		return nil, nothing, err
	}
	fmt.Fprintf(cio.stdout, "\n*** LOCAL AWS EMULATOR: terraform talks to moto on %s — nothing real is created, and its state is lost when grape dev stops ***\n\n", m.URL)
	return m.Env("eu-central-1"), m.Stop, nil
}

// startPortal serves the portal for grape dev with a random sign-in token,
// until ctx ends; wait returns when it has shut down.
func startPortal(ctx context.Context, cio *cmdIO, log *slog.Logger, st *store.Store, n *notify.Notifier, listen, cluster string) (token, url string, wait func(), err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", "", nil, err
	}
	token = hex.EncodeToString(b)
	// The portal acts as its user, as in production: the token's user is
	// an admin of the dev cluster (a new id each run, like the token).
	if err := st.CheckAsUser(ctx); err != nil {
		return "", "", nil, fmt.Errorf("portal: %w", err)
	}
	user := uuid.New()
	if _, err := st.SetMember(ctx, cluster, user, store.RoleAdmin); err != nil {
		return "", "", nil, fmt.Errorf("portal: %w", err)
	}
	srv, err := portal.New(portal.Options{Store: st, Notifier: n, Auth: portal.Auth{Token: token, TokenUser: user}, Logger: log})
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", "", nil, fmt.Errorf("portal --listen %s: %w", listen, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := servePortal(ctx, cio, log, srv, ln, "", ""); err != nil {
			log.Error("portal stopped", "err", err)
		}
	}()
	return token, "http://" + ln.Addr().String() + "/", func() { <-done }, nil
}
