package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{
		name:    "workspace",
		summary: "the audit repository's trust record (subcommands: accept-rewrite, rewrites)",
	})
	register(&command{
		name:    "workspace accept-rewrite",
		summary: "accept a rewritten audit branch so the cluster's deployments may commit again",
		long: `Before every commit an agent checks that the audit branch still contains the
last commit its cluster recorded. After a force-push (or a deleted branch) it
refuses, and every deployment fails with kind git naming the missing commit and
the new tip. Once you know who rewrote the branch and why, run this: it records
you, the reason and the commit given up. With --tip (the tip the error named),
the next commit must build on exactly that tip; without it, on whatever the
branch holds then. Server-side branch protection should make this rare.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, tip, reason, who string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster whose audit branch was rewritten")
			fs.StringVar(&tip, "tip", "", "full SHA of the branch tip you vouch for (from the deployment's error)")
			fs.StringVar(&reason, "reason", "", "why the history was rewritten (kept with your name)")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || reason == "" {
					return usagef("--cluster and --reason are required")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					w, err := st.AcceptRewrite(ctx, store.AcceptRewriteParams{ClusterID: cluster, Tip: tip, Reason: reason, By: who})
					switch {
					case isNotFound(err):
						return fmt.Errorf("cluster %q does not exist: see `grape cluster list`", cluster)
					case errors.Is(err, store.ErrInvalid):
						return usagef("%v", err)
					case err != nil:
						return err
					}
					gaveUp := "no commit was required"
					if w.MissingCommit != nil {
						gaveUp = "commit " + *w.MissingCommit + " is no longer required"
					}
					next := "the next commit builds on the branch as it is then"
					if w.AcceptedTip != nil {
						next = "the next commit must build on " + *w.AcceptedTip
					}
					fmt.Fprintf(cio.stdout, "rewrite of cluster %s's audit branch accepted by %s: %s; %s\n", cluster, w.AcceptedBy, gaveUp, next)
					return nil
				})
			}
		},
	})
	registerList(listCommand[store.WorkspaceRewrite]{
		name:            "workspace rewrites",
		summary:         "list the audit-branch rewrites accepted for a cluster, newest first",
		clusterRequired: true,
		load:            (*store.Store).ListRewrites,
		header:          []string{"ACCEPTED AT", "BY", "GAVE UP", "TRUSTED TIP", "REASON"},
		row: func(w store.WorkspaceRewrite) []string {
			return []string{w.AcceptedAt.Format(time.RFC3339), w.AcceptedBy, orDash(w.MissingCommit), orDash(w.AcceptedTip), w.Reason}
		},
	})
}

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}
