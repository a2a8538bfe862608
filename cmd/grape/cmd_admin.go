package main

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"runtime"
	"runtime/debug"
	"text/tabwriter"
	"time"

	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func grapeVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}

func init() {
	register(&command{
		name:    "migrate",
		summary: "apply the control-plane schema migrations (idempotent; safe to run from several processes)",
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			dbFlag(fs, &db)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				_, pool, err := openStore(ctx, db)
				if err != nil {
					return err
				}
				defer pool.Close()
				applied, err := store.Migrate(ctx, pool)
				if err != nil {
					return err
				}
				if len(applied) == 0 {
					fmt.Fprintln(cio.stdout, "schema is up to date")
					return nil
				}
				fmt.Fprintf(cio.stdout, "applied migrations %v\n", applied)
				return nil
			}
		},
	})

	register(&command{name: "cluster", summary: "manage clusters (create, list)"})
	register(&command{
		name:    "cluster create",
		args:    "ID",
		summary: "create a cluster and the database login role its agents connect as (password printed once)",
		long: `Prints the cluster id, then the agent role's name, password and connection URL
(shown only now). The role can read its cluster's configs and deployments, claim
and run them, write their logs and drift reports — and nothing of other
clusters (row-level security, docs/security.md). --print-sql prints the SQL for
a Supabase admin to run instead and changes nothing.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, description string
			var rf agentRoleFlags
			dbFlag(fs, &db)
			fs.StringVar(&description, "description", "", "what this cluster is")
			rf.register(fs, true)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want exactly one cluster id")
				}
				if err := store.ValidateClusterID(args[0]); err != nil {
					return usagef("%v", err)
				}
				return createClusterWithAgentRole(ctx, cio, db, args[0], description, rf)
			}
		},
	})
	register(&command{
		name:    "cluster list",
		summary: "list clusters and their agents",
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			dbFlag(fs, &db)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				return withStore(ctx, db, func(st *store.Store) error {
					clusters, err := st.ListClusters(ctx)
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "CLUSTER\tAGENT\tVERSION\tLAST SEEN\tSTATE")
					for _, c := range clusters {
						agents, err := st.ListAgents(ctx, c.ID)
						if err != nil {
							return err
						}
						if len(agents) == 0 {
							fmt.Fprintf(tw, "%s\t-\t-\t-\tno agent\n", c.ID)
						}
						for _, a := range agents {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.ID, a.ID, a.Version, a.LastHeartbeatAt.Format(time.RFC3339), agentState(a))
						}
					}
					return tw.Flush()
				})
			}
		},
	})

	register(&command{
		name:    "version",
		summary: "print the Grape and Go versions and the engine (terraform or OpenTofu) with its version",
		flags: func(fs *flag.FlagSet) runFunc {
			var tf string
			fs.StringVar(&tf, "terraform-binary", "terraform", "the terraform (or OpenTofu) binary to report")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				fmt.Fprintf(cio.stdout, "grape %s\n%s %s/%s\n", grapeVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
				path, err := exec.LookPath(tf)
				if err != nil {
					// version reports what it finds; a missing engine is
					// part of the answer, not a failure of the command.
					fmt.Fprintf(cio.stdout, "engine: not found (%s: %v)\n", tf, err)
					return nil
				}
				e, err := runner.DetectEngine(ctx, path)
				if err != nil {
					fmt.Fprintf(cio.stdout, "engine: unknown (%v)\n", err)
					return nil
				}
				fmt.Fprintf(cio.stdout, "engine: %s (%s)\n", e, path)
				return nil
			}
		},
	})
}

// agentState reads an agent row as a person would.
func agentState(a store.Agent) string {
	switch {
	case a.StoppedAt != nil:
		return "stopped"
	case time.Since(a.LastHeartbeatAt) > time.Minute:
		return "offline"
	default:
		return "online"
	}
}
