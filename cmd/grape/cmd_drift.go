package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{
		name:    "drift",
		summary: "list the latest drift report of each config (subcommands: check, remediate)",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, config string
			var asJSON bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "only this cluster")
			fs.StringVar(&config, "config", "", "only this config (name, with --cluster, or id)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) > 0 {
					return usagef("unknown drift subcommand %q: use check or remediate", args[0])
				}
				return withStore(ctx, db, func(st *store.Store) error {
					var cfgID *uuid.UUID
					if config != "" {
						c, err := st.GetConfig(ctx, cluster, config)
						if err != nil {
							return err
						}
						cfgID = &c.ID
					}
					reports, err := st.LatestDriftReports(ctx, cluster, cfgID)
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(cio.stdout, reports)
					}
					names := map[uuid.UUID]string{}
					cfgs, err := st.ListConfigs(ctx, cluster)
					if err != nil {
						return err
					}
					for _, c := range cfgs {
						names[c.ID] = c.ClusterID + "/" + c.Name
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "CONFIG\tOUTCOME\tCHECKED AT\tCHANGES\tREPORT")
					for _, r := range reports {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", names[r.ConfigID], r.Status, r.CheckedAt.Format(time.RFC3339), driftChanges(r), r.ID)
					}
					return tw.Flush()
				})
			}
		},
	})

	register(&command{
		name:    "drift remediate",
		args:    "REPORT",
		summary: "queue an apply of the commit a drifted report checked (through the approval gate if the config requires it)",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, who string
			dbFlag(fs, &db)
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want one drift report id")
				}
				id, err := uuid.Parse(args[0])
				if err != nil {
					return usagef("drift report id %q is not a UUID", args[0])
				}
				return withStore(ctx, db, func(st *store.Store) error {
					rep, err := st.GetDriftReport(ctx, id)
					if err != nil {
						return err
					}
					d, err := drift.Remediate(ctx, st, rep, who)
					if err != nil {
						return err
					}
					fmt.Fprintln(cio.stdout, d.ID)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "drift check",
		summary: "run one drift check of a config now, in this process, and print its report",
		long: `Takes the same flags as grape agent (the audit repository, --data-dir, terraform
settings), queues a drift check of the config's last applied commit, runs it
here — waiting for the config's slot like any deployment — and prints the report.
Exit status 0: in sync; 2: drifted; 1: the check failed.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var f agentFlags
			var config string
			var asJSON bool
			f.register(fs)
			fs.StringVar(&config, "config", "", "config name or id (required)")
			fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if config == "" {
					return usagef("--config is required")
				}
				if f.agentID == "" {
					host, _ := os.Hostname()
					f.agentID = fmt.Sprintf("%s-drift-check-%d", host, os.Getpid())
				}
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
				cfg, err := st.GetConfig(ctx, f.cluster, config)
				if err != nil {
					return err
				}
				cands, err := st.DriftCandidates(ctx, f.cluster)
				if err != nil {
					return err
				}
				var commit *string
				for _, c := range cands {
					if c.Config.ID == cfg.ID {
						commit = c.LastAppliedCommit
					}
				}
				if commit == nil {
					return fmt.Errorf("config %s was never applied: there is no commit to check for drift", cfg.Name)
				}
				f.dataDir, _ = filepath.Abs(f.dataDir)
				parts, err := buildAgent(ctx, &f, st, pool, nil, log, nil)
				if err != nil {
					return err
				}
				defer parts.close()
				// Say what the check waits for: a parked approval holds the
				// config's slot until it is decided or expires.
				if blk, err := st.ConfigBlocker(ctx, cfg.ID); err == nil {
					fmt.Fprintf(cio.stderr, "drift check of %s/%s: %s\n", cfg.ClusterID, cfg.Name, blk.Describe(time.Now()))
				} else if !isNotFound(err) {
					return err
				}
				head, err := st.NotifyOutboxHead(ctx, f.cluster)
				if err != nil {
					return err
				}
				d, err := parts.agent.RunNow(ctx, store.EnqueueParams{ClusterID: f.cluster, ConfigID: cfg.ID, Action: store.ActionDrift,
					SourceCommit: commit, RequestedBy: "grape drift check", MaxAttempts: 1})
				if err != nil {
					return err
				}
				flushWebhooks(ctx, st, &f, head, log) // drift.detected / .resolved
				reports, err := st.LatestDriftReports(ctx, f.cluster, &cfg.ID)
				if err != nil {
					return err
				}
				if len(reports) == 0 || reports[0].DeploymentID == nil || *reports[0].DeploymentID != d.ID {
					final, _ := st.GetDeployment(ctx, d.ID)
					return fmt.Errorf("drift check %s ended %s without a report: %s", d.ID, final.Status, ptr.Deref(final.Error))
				}
				rep := reports[0]
				if asJSON {
					if err := writeJSON(cio.stdout, rep); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(cio.stdout, "%s/%s: %s at commit %s (%s, %d ms)\n", cfg.ClusterID, cfg.Name, rep.Status, ptr.Deref(rep.CommitSHA), rep.ID, ptr.Deref(rep.DurationMS))
					if rep.Error != nil {
						fmt.Fprintf(cio.stdout, "error: %s\n", *rep.Error)
					}
					if len(rep.Details) > 2 {
						fmt.Fprintf(cio.stdout, "%s\n", rep.Details)
					}
				}
				switch rep.Status {
				case store.DriftInSync:
					return nil
				case store.DriftDrifted:
					return exitError{2}
				}
				return exitError{1}
			}
		},
	})
}

// driftChanges summarises a report's changed resources.
func driftChanges(r store.DriftReport) string {
	switch r.Status {
	case store.DriftError:
		return truncate(ptr.Deref(r.Error), 60)
	case store.DriftInSync:
		return "-"
	}
	var d struct {
		Resources []struct {
			Address string `json:"address"`
			Action  string `json:"action"`
		} `json:"resources"`
	}
	_ = json.Unmarshal(r.Details, &d)
	if len(d.Resources) == 0 {
		return "changes"
	}
	s := fmt.Sprintf("%d resources: %s %s", len(d.Resources), d.Resources[0].Action, d.Resources[0].Address)
	if len(d.Resources) > 1 {
		s += ", …"
	}
	return truncate(s, 70)
}
