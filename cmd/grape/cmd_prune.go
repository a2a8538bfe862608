package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{
		name:    "prune",
		summary: "delete old deployment logs and delivered webhook events (and, with --history, old deployments and drift reports)",
		long: `Log lines of deployments that finished more than --older-than ago are deleted in
small batches that never hold up the log appends of running deployments; the
deployment rows stay (status, plan summary, outputs, error) and grape logs and the
portal say the log was pruned. Running deployments and those awaiting approval are
never touched. Webhook events delivered before the cutoff go too. With
--history, deployments, drift reports and undelivered (given up) webhook
events older than that go too, except per config the latest succeeded apply (drift checks and approvals run
its commit), the latest deployment and the latest drift report. Safe to stop and
re-run; run it daily (deploy/grape-prune.timer, or pg_cron on Supabase: docs/supabase.md).`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			var older, history age
			var dryRun bool
			dbFlag(fs, &db)
			fs.Var(&older, "older-than", "delete the logs of deployments finished longer ago than this (e.g. 60d, 720h); required")
			fs.Var(&history, "history", "also delete deployments and drift reports finished longer ago than this (longer than --older-than, e.g. 365d)")
			fs.BoolVar(&dryRun, "dry-run", false, "count what would be deleted and delete nothing")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if older == 0 {
					return usagef("--older-than is required (e.g. --older-than 60d)")
				}
				if history != 0 && history < older {
					return usagef("--history %s is shorter than --older-than %s: history must outlive logs", history.String(), older.String())
				}
				now := time.Now()
				o := store.PruneOptions{LogsBefore: now.Add(-time.Duration(older)), DryRun: dryRun}
				if history != 0 {
					o.HistoryBefore = now.Add(-time.Duration(history))
				}
				return withStore(ctx, db, func(st *store.Store) error {
					res, err := st.Prune(ctx, o)
					verb := "deleted"
					if dryRun {
						verb = "would delete"
					}
					fmt.Fprintf(cio.stdout, "%s %d log lines of %d deployments finished before %s\n",
						verb, res.LogLines, res.LogDeployments, o.LogsBefore.UTC().Format(time.RFC3339))
					if history != 0 {
						fmt.Fprintf(cio.stdout, "%s %d deployments and %d drift reports from before %s\n",
							verb, res.DeletedDeployments, res.DriftReports, o.HistoryBefore.UTC().Format(time.RFC3339))
					}
					which := "delivered before the log cutoff"
					if history != 0 {
						which += ", or undelivered before the history cutoff"
					}
					fmt.Fprintf(cio.stdout, "%s %d webhook events (%s)\n", verb, res.Notifications, which)
					return err
				})
			}
		},
	})
}

// age is a duration flag that also takes days ("60d"), the unit retention
// is thought in.
type age time.Duration

func (a *age) String() string {
	if a == nil || *a == 0 {
		return ""
	}
	d := time.Duration(*a)
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

func (a *age) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%q: use a whole number of days (60d) or a Go duration (720h)", s)
		}
		*a = age(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q: use a whole number of days (60d) or a Go duration (720h)", s)
	}
	*a = age(d)
	return nil
}
