package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/store"
)

// Memberships, cluster settings and the audit trail (docs/security.md,
// "People"). The database enforces the rules; these commands run as the
// tables' owner and are recorded in the trail as cli:<os user>.
func init() {
	register(&command{name: "member", summary: "manage who may do what on a cluster (add, remove, list)"})
	register(&command{
		name:    "member add",
		summary: "give a user a role on a cluster (replaces the role they had)",
		long: `Roles, each including the ones before it: viewer (read), operator (+ queue
plan/apply/destroy, cancel), approver (+ approve, reject), admin (+ edit configs
and their settings, the cluster's settings and its members). The user is the
Supabase auth user id (auth.uid()), or the id the portal maps a sign-in to.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var f memberFlags
			f.register(fs, true)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				user, err := f.parse(args)
				if err != nil {
					return err
				}
				role, err := store.ParseRole(f.role)
				if err != nil {
					return usagef("--role: %v", err)
				}
				return withStore(ctx, f.db, func(st *store.Store) error {
					m, err := st.SetMember(ctx, f.cluster, user, role)
					if err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "%s is %s of cluster %s\n", m.UserID, m.Role, m.ClusterID)
					return nil
				})
			}
		},
	})
	register(&command{
		name:    "member remove",
		summary: "take a user's role on a cluster away",
		flags: func(fs *flag.FlagSet) runFunc {
			var f memberFlags
			f.register(fs, false)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				user, err := f.parse(args)
				if err != nil {
					return err
				}
				return withStore(ctx, f.db, func(st *store.Store) error {
					if err := st.RemoveMember(ctx, f.cluster, user); err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "%s removed from cluster %s\n", user, f.cluster)
					return nil
				})
			}
		},
	})
	registerList(listCommand[store.Membership]{
		name:    "member list",
		summary: "list the members of a cluster (of every cluster without --cluster)",
		load:    (*store.Store).ListMembers,
		header:  []string{"CLUSTER", "USER", "ROLE", "ADDED", "BY"},
		row: func(m store.Membership) []string {
			return []string{m.ClusterID, m.UserID.String(), string(m.Role), m.CreatedAt.Format(time.DateTime), m.CreatedBy}
		},
	})

	register(&command{
		name:    "cluster set",
		args:    "ID",
		summary: "change a cluster's settings (four eyes)",
		long: `--four-eyes on (the default for new clusters): whoever requested a deployment
cannot approve it; another approver must. off: one person may do both (a team
of one). The database enforces it, for every front end.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, fourEyes string
			dbFlag(fs, &db)
			fs.StringVar(&fourEyes, "four-eyes", "", "on or off")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want exactly one cluster id")
				}
				var on bool
				switch fourEyes {
				case "on":
					on = true
				case "off":
				case "":
					return usagef("nothing to set: pass --four-eyes on|off")
				default:
					return usagef("--four-eyes: want on or off, got %q", fourEyes)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if err := st.SetFourEyes(ctx, args[0], on); err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "cluster %s: four eyes %s\n", args[0], fourEyes)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "audit",
		summary: "show the audit trail: who changed configs, queued, approved, rejected or cancelled deployments, members, clusters and agent roles",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, since string
			var limit int
			var asJSON bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "only this cluster's events")
			fs.StringVar(&since, "since", "", "only events since: a duration (24h) or an RFC 3339 time")
			fs.IntVar(&limit, "limit", 1000, "at most this many events (the latest)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 0 {
					return usagef("audit takes no arguments")
				}
				f := store.AuditFilter{ClusterID: cluster, Limit: limit}
				if since != "" {
					t, err := parseSince(since, time.Now())
					if err != nil {
						return err
					}
					f.Since = t
				}
				return withStore(ctx, db, func(st *store.Store) error {
					evs, err := st.ListAudit(ctx, f)
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(cio.stdout, evs)
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tCLUSTER\tTARGET\tDETAILS")
					for _, e := range evs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339), e.Actor, e.Action,
							orNone(ptr.Deref(e.ClusterID)), orNone(ptr.Deref(e.TargetID)), e.Details)
					}
					return tw.Flush()
				})
			}
		},
	})
}

// parseSince reads --since: a duration back from now, or a point in time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--since: want a duration such as 24h, a date (2026-12-01, UTC) or an RFC 3339 time, got %q", s)
}

type memberFlags struct {
	db, cluster, user, role string
}

func (f *memberFlags) register(fs *flag.FlagSet, withRole bool) {
	dbFlag(fs, &f.db)
	fs.StringVar(&f.cluster, "cluster", "", "cluster id")
	fs.StringVar(&f.user, "user", "", "the user's id (a UUID: Supabase auth.users.id)")
	if withRole {
		fs.StringVar(&f.role, "role", "", "viewer, operator, approver or admin")
	}
}

func (f *memberFlags) parse(args []string) (uuid.UUID, error) {
	if len(args) != 0 {
		return uuid.Nil, usagef("unexpected arguments %q: pass --cluster, --user and --role", args)
	}
	if f.cluster == "" {
		return uuid.Nil, usagef("--cluster is required")
	}
	if err := store.ValidateClusterID(f.cluster); err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return uuid.Nil, usagef("--cluster: %v", err)
		}
		return uuid.Nil, err
	}
	id, err := uuid.Parse(f.user)
	if err != nil {
		return uuid.Nil, usagef("--user: want a UUID (auth.users.id), got %q", f.user)
	}
	return id, nil
}

// Webhook targets (docs/notifications.md).
func init() {
	register(&command{name: "notify", summary: "manage a cluster's webhook notifications (add, list, remove, rotate)"})
	register(&command{
		name:    "notify add",
		summary: "send a cluster's deployment and drift events to a URL, signed (X-Grape-Signature)",
		long: `Events: deployment.awaiting_approval, deployment.failed, deployment.succeeded,
deployment.cancelled, deployment.waiting, drift.detected, drift.resolved
(default: all). The
cluster's agents deliver them, at least once and in order per deployment,
retrying with backoff. The signing secret is printed once.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, url, format, events string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&url, "url", "", "where to POST (http or https)")
			fs.StringVar(&format, "format", "json", "json (the event) or slack (an incoming-webhook message)")
			fs.StringVar(&events, "events", "", "comma-separated events to send (default: every event)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 0 || cluster == "" || url == "" {
					return usagef("want --cluster and --url")
				}
				t := store.NotifyTarget{ClusterID: cluster, URL: url, Format: format}
				for _, e := range strings.Split(events, ",") {
					if e = strings.TrimSpace(e); e != "" {
						t.Events = append(t.Events, e)
					}
				}
				if err := store.ValidateNotifyTarget(t); err != nil {
					return usagef("%v", err)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					t, secret, err := st.AddNotifyTarget(ctx, t)
					if err != nil {
						if errors.Is(err, store.ErrInvalid) {
							return usagef("%v", err)
						}
						return err
					}
					fmt.Fprintf(cio.stdout, `webhook %s of cluster %s added.
Its signing secret is shown only this once; verify X-Grape-Signature (sha256=<HMAC-SHA256 of the body>) with it:
  secret: %s
`, t.ID, t.ClusterID, secret)
					return nil
				})
			}
		},
	})
	registerList(listCommand[store.NotifyTarget]{
		name:    "notify list",
		summary: "list webhook targets (of every cluster without --cluster)",
		load:    (*store.Store).ListNotifyTargets,
		header:  []string{"ID", "CLUSTER", "FORMAT", "EVENTS", "URL"},
		row: func(t store.NotifyTarget) []string {
			ev := "all"
			if len(t.Events) > 0 {
				ev = strings.Join(t.Events, ",")
			}
			return []string{t.ID.String(), t.ClusterID, t.Format, ev, t.URL}
		},
	})
	register(&command{
		name:    "notify remove",
		args:    "ID",
		summary: "remove a webhook target (and what it had still to deliver)",
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			dbFlag(fs, &db)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want exactly one webhook id")
				}
				id, err := uuid.Parse(args[0])
				if err != nil {
					return usagef("webhook id %q is not a UUID", args[0])
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if err := st.RemoveNotifyTarget(ctx, id); err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "webhook %s removed\n", id)
					return nil
				})
			}
		},
	})
	register(&command{
		name:    "notify rotate",
		summary: "give a webhook target a new signing secret, printed once (the old one stops at once)",
		long: `A clean cut: every delivery from now on, retries of older events included, is
signed with the new secret, and the old one is forgotten. A delivery already
on the wire when you rotate may still carry the old signature; put the new
secret into the receiver right away (or let it accept both for a minute).`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, id string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id (required)")
			fs.StringVar(&id, "id", "", "webhook id, as grape notify list shows it (required)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 0 || cluster == "" || id == "" {
					return usagef("want --cluster and --id")
				}
				tid, err := uuid.Parse(id)
				if err != nil {
					return usagef("--id: %q is not a UUID (grape notify list --cluster %s)", id, cluster)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					secret, err := st.RotateNotifySecret(ctx, cluster, tid)
					if err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, `webhook %s of cluster %s has a new signing secret; the old one is no longer used.
It is shown only this once:
  secret: %s
`, tid, cluster, secret)
					return nil
				})
			}
		},
	})
}
