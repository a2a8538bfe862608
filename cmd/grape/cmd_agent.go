package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

// agentFlags are the settings of `grape agent` (and of `grape dev`'s agent).
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
	logs         logFlags
}

func (f *agentFlags) register(fs *flag.FlagSet) {
	dbFlag(fs, &f.db)
	fs.StringVar(&f.cluster, "cluster", "", "the cluster this agent serves (required)")
	fs.StringVar(&f.agentID, "agent-id", "", "this agent's id (default: hostname plus a hash of --data-dir, stable across restarts)")
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir(), "where the agent keeps its workspace clone, run dirs, plan files and local state")
	fs.IntVar(&f.concurrency, "concurrency", 1, "deployments run at once by this agent")
	fs.DurationVar(&f.pollInterval, "poll-interval", time.Second, "how often to look for work besides LISTEN/NOTIFY")
	fs.BoolVar(&f.pollOnly, "poll-only", false, "do not LISTEN (for transaction-mode poolers); poll only")
	fs.DurationVar(&f.lease, "lease", 30*time.Second, "how long a claim stays valid without a heartbeat; a lost agent's deployment is taken back after it")
	fs.DurationVar(&f.heartbeat, "heartbeat-interval", 2*time.Second, "how often running deployments renew their lease and check for cancel requests")
	fs.DurationVar(&f.drain, "drain-timeout", 30*time.Minute, "on the first SIGINT/SIGTERM, how long to let running deployments finish")
	fs.BoolVar(&f.once, "once", false, "claim and run at most one deployment, then exit")
	f.logs.register(fs)
}

func defaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" { // systemd StateDirectory=
		return d
	}
	return ".grape"
}

// agentID is stable for one machine and data dir, so a restarted agent finds
// the plan files it saved for approval.
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
	if f.concurrency < 1 || f.concurrency > 64 {
		return usagef("--concurrency: want 1 to 64, got %d", f.concurrency)
	}
	if f.pollInterval < 10*time.Millisecond {
		return usagef("--poll-interval: want at least 10ms, got %s", f.pollInterval)
	}
	if f.lease < 3*time.Second {
		return usagef("--lease: want at least 3s, got %s", f.lease)
	}
	if f.heartbeat <= 0 || f.heartbeat*2 > f.lease {
		return usagef("--heartbeat-interval: want more than 0 and at most half of --lease (%s), got %s", f.lease, f.heartbeat)
	}
	return nil
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
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if err := f.validate(); err != nil {
					return err
				}
				log, err := f.logs.logger(cio.stderr)
				if err != nil {
					return err
				}
				st, pool, err := openStore(ctx, f.db)
				if err != nil {
					return err
				}
				defer pool.Close()
				agent, err := reconciler.New(st, f.db, placeholderWork{}, reconciler.Options{
					ClusterID: f.cluster, AgentID: f.id(), Hostname: hostname(), Version: grapeVersion(),
					Concurrency: f.concurrency, PollInterval: f.pollInterval, PollOnly: f.pollOnly,
					Lease: f.lease, HeartbeatInterval: f.heartbeat, DrainTimeout: f.drain, Once: f.once,
					Logger: log,
				})
				if err != nil {
					return err
				}
				stop := abortOnSecondSignal(ctx, agent.Abort)
				defer stop()
				return agent.Run(ctx)
			}
		},
	})
}

// abortOnSecondSignal calls abort on the second SIGINT/SIGTERM. The first one
// cancels ctx (main's NotifyContext) and starts the drain.
func abortOnSecondSignal(ctx context.Context, abort func()) (stop func()) {
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

// placeholderWork stands in for terraform execution until the pipeline is
// wired: it says so in the deployment's log and succeeds without applying.
type placeholderWork struct{}

func (placeholderWork) Execute(ctx context.Context, r *reconciler.Run) store.Outcome {
	r.Logs.Agentf("placeholder run: terraform execution is not wired into this build; nothing was applied")
	return store.Outcome{Status: store.StatusSucceeded}
}
