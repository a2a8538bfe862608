package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/termsafe"
)

func init() {
	register(&command{
		name:    "deploy",
		summary: "queue a deployment of a config; prints the deployment id",
		long: `Actions: apply (default: plan, then apply that plan), plan (stop after plan),
destroy (plan -destroy, then apply it). With --follow, print the deployment's
log live and exit 0 only if it succeeded.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var (
				db, cluster, cfgRef, action, who string
				approval, follow, noColor        bool
				acceptEmpty, acceptRollback      bool
			)
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&cfgRef, "config", "", "config name or id")
			fs.StringVar(&action, "action", "apply", "plan, apply or destroy")
			fs.BoolVar(&approval, "require-approval", false, "stop after plan until someone runs grape approve")
			fs.BoolVar(&follow, "follow", false, "print the log live until the deployment ends")
			noColorFlag(fs, &noColor)
			fs.BoolVar(&acceptEmpty, "accept-empty-state", false, "this once, plan from an empty state although Grape applied the config (after an out-of-band destroy); recorded with --as")
			fs.BoolVar(&acceptRollback, "accept-rollback", false, "this once, deploy a config version older than the audit repository's newest commit of it (an intended rollback of the database); recorded with --as")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || cfgRef == "" {
					return usagef("--cluster and --config are required")
				}
				act, err := store.ParseAction(action)
				if err != nil {
					return usagef("--action: %v", err)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if _, err := st.GetCluster(ctx, cluster); err != nil {
						if isNotFound(err) {
							return fmt.Errorf("cluster %q does not exist: create it with `grape cluster create %s`", cluster, cluster)
						}
						return err
					}
					c, err := st.GetConfig(ctx, cluster, cfgRef)
					if err != nil {
						if isNotFound(err) {
							return fmt.Errorf("config %q does not exist in cluster %s: see `grape config list --cluster %s`", cfgRef, cluster, cluster)
						}
						return err
					}
					d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cluster, ConfigID: c.ID, Action: act, RequireApproval: approval, RequestedBy: who,
						AcceptEmptyState: acceptEmpty, AcceptRollback: acceptRollback})
					if err != nil {
						return err
					}
					fmt.Fprintln(cio.stdout, d.ID)
					if !follow {
						return nil
					}
					return followLogs(ctx, st, db, d.ID, newLinePrinter(cio, noColor))
				})
			}
		},
	})

	register(&command{
		name:    "status",
		args:    "[DEPLOYMENT]",
		summary: "show one deployment, or list recent deployments",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster string
			var asJSON, diff bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "only this cluster (list)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.BoolVar(&diff, "diff", false, "print the deployment's plan diff: each changed attribute, old -> new (with --json: the stored diff)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) > 1 {
					return usagef("want at most one deployment id")
				}
				if diff && len(args) != 1 {
					return usagef("--diff needs a deployment id")
				}
				var id uuid.UUID
				if len(args) == 1 {
					var err error
					if id, err = parseDeploymentID(args); err != nil {
						return err
					}
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if len(args) == 1 {
						d, err := st.GetDeployment(ctx, id)
						if err != nil {
							return err
						}
						if diff {
							return printPlanDiff(cio.stdout, d, asJSON)
						}
						if asJSON {
							return writeJSON(cio.stdout, d)
						}
						if err := printDeployment(cio.stdout, d); err != nil {
							return err
						}
						if why := waitReason(ctx, st, d); why != "" {
							fmt.Fprintf(cio.stdout, "waiting:  %s\n", why)
						}
						return printBlocker(ctx, cio.stdout, st, d)
					}
					ds, err := st.ListDeployments(ctx, store.ListFilter{ClusterID: cluster, Limit: 30})
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(cio.stdout, ds)
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tCLUSTER\tACTION\tSTATUS\tPHASE\tCREATED\tERROR")
					for _, d := range ds {
						note := ptr.Deref(d.Error)
						if why := waitReason(ctx, st, d); why != "" {
							note = why
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.ClusterID, d.Action, d.Status, d.PhaseName(), d.CreatedAt.Format("01-02 15:04:05"), truncate(note, 100))
					}
					return tw.Flush()
				})
			}
		},
	})

	for _, verb := range []struct {
		name, summary string
		// review: the verb is a decision on a plan, which may carry a
		// comment (--comment).
		review bool
		do     func(st *store.Store, ctx context.Context, id uuid.UUID, by, comment string) (store.Deployment, error)
	}{
		{"cancel", "cancel a deployment (a running one gets SIGINT, then its process group is killed after a grace period)", false,
			func(st *store.Store, ctx context.Context, id uuid.UUID, by, _ string) (store.Deployment, error) {
				return st.RequestCancel(ctx, id, by)
			}},
		{"approve", "apply the saved plan of a deployment awaiting approval (refused if the config changed since)", true, (*store.Store).Approve},
		{"reject", "end a deployment awaiting approval without applying it", true, (*store.Store).Reject},
	} {
		register(&command{
			name:    verb.name,
			args:    "DEPLOYMENT",
			summary: verb.summary,
			flags: func(fs *flag.FlagSet) runFunc {
				var db, who, comment string
				dbFlag(fs, &db)
				whoFlag(fs, &who)
				if verb.review {
					fs.StringVar(&comment, "comment", "", "why: stored with the decision, shown by grape status and the portal, and written into the commit's git note (at most 2,000 characters)")
				}
				return func(ctx context.Context, cio *cmdIO, args []string) error {
					id, err := parseDeploymentID(args)
					if err != nil {
						return err
					}
					if err := store.ValidateReviewComment(comment); err != nil {
						return usagef("--comment: %v", err)
					}
					return withStore(ctx, db, func(st *store.Store) error {
						d, err := verb.do(st, ctx, id, who, comment)
						if err != nil {
							return err
						}
						if verb.name == "cancel" && d.Status == store.StatusInProgress {
							fmt.Fprintf(cio.stdout, "cancel requested; the agent stops deployment %s shortly\n", d.ID)
							return nil
						}
						fmt.Fprintf(cio.stdout, "deployment %s is %s\n", d.ID, d.Status)
						return nil
					})
				}
			},
		})
	}

	register(&command{
		name:    "logs",
		args:    "DEPLOYMENT",
		summary: "print a deployment's log; with --follow, tail it live and exit with its outcome",
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			var follow, noColor bool
			dbFlag(fs, &db)
			fs.BoolVar(&follow, "follow", false, "tail live until the deployment ends; exit 0 only if it succeeded")
			noColorFlag(fs, &noColor)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				id, err := parseDeploymentID(args)
				if err != nil {
					return err
				}
				return withStore(ctx, db, func(st *store.Store) error {
					d, err := st.GetDeployment(ctx, id)
					if err != nil {
						return err
					}
					p := newLinePrinter(cio, noColor)
					if d.LogsPrunedAt != nil {
						fmt.Fprintf(cio.stdout, "[grape] %s\n", prunedNote(d))
					}
					if err := printBlocker(ctx, cio.stdout, st, d); err != nil {
						return err
					}
					if follow {
						return followLogs(ctx, st, db, id, p)
					}
					var after int64
					for {
						lines, err := st.ReadLogs(ctx, id, after, 5000)
						if err != nil {
							return err
						}
						for _, l := range lines {
							p.line(l)
							after = l.Seq
						}
						if len(lines) < 5000 {
							return nil
						}
					}
				})
			}
		},
	})
}

// printBlocker says what a queued deployment waits for: its config's
// running or parked deployment (an approval holds the slot until it is
// decided or expires).
func printBlocker(ctx context.Context, w io.Writer, st *store.Store, d store.Deployment) error {
	if d.Status != store.StatusQueued {
		return nil
	}
	blk, err := st.ConfigBlocker(ctx, d.ConfigID)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "[grape] queued: %s\n", blk.Describe(time.Now()))
	return nil
}

// prunedNote says the log is gone and what is left of the deployment.
func prunedNote(d store.Deployment) string {
	return fmt.Sprintf("the log of this deployment was pruned at %s (log retention, grape prune); its status, plan summary, outputs and error are kept: grape status %s",
		d.LogsPrunedAt.UTC().Format(time.RFC3339), d.ID)
}

// printPlanDiff prints the stored plan diff. Its values come from the
// managed infrastructure, so they pass through termsafe like log lines.
func printPlanDiff(w io.Writer, d store.Deployment, asJSON bool) error {
	var pd *plandiff.Diff
	if len(d.PlanDiff) > 0 {
		if err := json.Unmarshal(d.PlanDiff, &pd); err != nil {
			return fmt.Errorf("reading the plan diff of deployment %s: %w", d.ID, err)
		}
	}
	if asJSON {
		return writeJSON(w, pd)
	}
	var b strings.Builder
	if err := plandiff.WriteTable(&b, pd); err != nil {
		return err
	}
	_, err := io.WriteString(w, termsafe.Clean(b.String(), false))
	return err
}

func printDeployment(w io.Writer, d store.Deployment) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("id", d.ID)
	row("cluster", d.ClusterID)
	row("config", fmt.Sprintf("%s (v%d)", d.ConfigID, ptr.Deref(d.ConfigVersion)))
	row("action", d.Action)
	row("status", d.Status)
	if d.Phase != nil {
		row("phase", *d.Phase)
	}
	row("attempt", fmt.Sprintf("%d of %d", d.Attempt, d.MaxAttempts))
	row("requested by", d.RequestedBy)
	if d.AcceptEmptyState {
		row("override", "accept empty state (requested by "+d.RequestedBy+")")
	}
	if d.AcceptRollback {
		row("override", "accept rollback behind the audit repository (requested by "+d.RequestedBy+")")
	}
	if d.ClaimedBy != nil {
		row("agent", *d.ClaimedBy)
	}
	if d.CommitSHA != nil {
		row("commit", *d.CommitSHA)
	}
	if d.Engine != nil {
		row("engine", *d.Engine+" "+ptr.Deref(d.EngineVersion))
	}
	if d.RequireApproval {
		approved := "no"
		if d.ApprovedAt != nil {
			approved = fmt.Sprintf("by %s at %s", ptr.Deref(d.ApprovedBy), d.ApprovedAt.Format(time.RFC3339))
		}
		row("approval required", "approved: "+approved)
	}
	if d.ReviewComment != nil {
		// The database refuses control characters in comments; quoting
		// keeps a multi-line one on its row.
		row("review comment", fmt.Sprintf("%q", *d.ReviewComment))
	}
	if len(d.PlanSummary) > 0 {
		var p struct{ Add, Change, Destroy, Replace int }
		if err := json.Unmarshal(d.PlanSummary, &p); err == nil {
			row("plan", fmt.Sprintf("%d to add, %d to change, %d to destroy, %d to replace (grape status --json lists the resources)", p.Add, p.Change, p.Destroy, p.Replace))
		}
	}
	if len(d.Cost) > 0 {
		row("cost", string(d.Cost))
	}
	printPolicy(row, d.Policy)
	if d.Error != nil {
		row("error", *d.Error)
	}
	row("created", d.CreatedAt.Format(time.RFC3339))
	if d.FinishedAt != nil {
		row("finished", d.FinishedAt.Format(time.RFC3339))
	}
	if d.LogsPrunedAt != nil {
		row("log", "pruned at "+d.LogsPrunedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
