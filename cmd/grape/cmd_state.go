package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{name: "state", summary: "local terraform state on this agent: versions, restore, who holds it (docs/operations.md)"})

	register(&command{
		name:    "state list",
		summary: "list the kept versions of a config's local state in this agent's data dir, newest first",
		long: `Run on the agent's machine, with its --data-dir. The live state is "current";
the agent keeps the state as it was before each of the last 10 applies.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, cfgRef, dataDir string
			var asJSON bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&cfgRef, "config", "", "config name or id")
			fs.StringVar(&dataDir, "data-dir", defaultDataDir(), "the agent's data dir")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || cfgRef == "" {
					return usagef("--cluster and --config are required")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, cfgRef)
					if err != nil {
						return err
					}
					vs, err := localstate.Dir{DataDir: dataDir}.List(cluster, c.ID.String())
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(cio.stdout, vs)
					}
					if h, err := st.StateHolderOf(ctx, c.ID); err == nil {
						fmt.Fprintf(cio.stderr, "agent %s holds the state of %s (since %s)\n", h.AgentID, c.Name, h.RecordedAt.Format(time.RFC3339))
					}
					if len(vs) == 0 {
						fmt.Fprintf(cio.stderr, "no local state of %s (%s) in %s: is this the agent that holds it?\n", c.Name, c.ID, dataDir)
						return nil
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "VERSION\tTIME\tSERIAL\tRESOURCES\tREASON")
					for _, v := range vs {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", v.Name, v.Time.Format(time.RFC3339), v.Serial, v.Resources, v.Reason)
					}
					return tw.Flush()
				})
			}
		},
	})

	register(&command{
		name:    "state restore",
		args:    "VERSION",
		summary: "make a kept version the config's live local state (recorded in the audit log)",
		long: `Run on the agent that holds the state, with its --data-dir. Refused while a
terraform process holds the state's lock. The state it replaces is kept as a
version first, so a restore can be undone. Queue a plan afterwards and read it
before applying anything.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, cfgRef, dataDir, who string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&cfgRef, "config", "", "config name or id")
			fs.StringVar(&dataDir, "data-dir", defaultDataDir(), "the agent's data dir")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || cfgRef == "" {
					return usagef("--cluster and --config are required")
				}
				if len(args) != 1 {
					return usagef("want exactly one VERSION (see `grape state list`)")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, cfgRef)
					if err != nil {
						return err
					}
					restored, saved, err := localstate.Dir{DataDir: dataDir}.Restore(cluster, c.ID.String(), args[0], time.Now())
					if err != nil {
						return err
					}
					detail := map[string]any{"version": restored.Name, "serial": restored.Serial, "resources": restored.Resources, "data_dir": dataDir}
					if saved.Name != "" {
						detail["replaced_kept_as"] = saved.Name
					}
					if err := st.RecordStateAudit(ctx, store.StateAudit{ClusterID: cluster, ConfigID: c.ID, Actor: who, Action: store.AuditStateRestore, Details: detail}); err != nil {
						return fmt.Errorf("the state was restored but recording it failed (record it by hand): %w", err)
					}
					fmt.Fprintf(cio.stdout, "restored %s of %s (serial %d, %d resources)\n", restored.Name, c.Name, restored.Serial, restored.Resources)
					if saved.Name != "" {
						fmt.Fprintf(cio.stdout, "the state it replaced is kept as %s\n", saved.Name)
					}
					fmt.Fprintf(cio.stdout, "next: grape deploy --cluster %s --config %s --action plan --follow\n", cluster, c.Name)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "state release",
		summary: "forget which agent holds a config's local state, so the next agent to apply it holds it (audited)",
		long: `For when the state was moved to another agent's data dir by hand, or the
config's holder is gone for good and its state with it (then the next apply
fails state_missing until someone accepts the empty state on purpose).`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, cfgRef, reason, who string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&cfgRef, "config", "", "config name or id")
			fs.StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || cfgRef == "" || reason == "" {
					return usagef("--cluster, --config and --reason are required")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, cfgRef)
					if err != nil {
						return err
					}
					h, err := st.ReleaseStateHolder(ctx, c.ID, who, reason)
					if errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no agent holds the state of %s: nothing to release", c.Name)
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "agent %s no longer holds the state of %s\n", h.AgentID, c.Name)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "config move-region",
		args:    "NAME|ID",
		summary: "move an applied config's stack to another region: queue the destroy in the old region and the create in the new one, both approval-gated",
		long: `A region is part of a stack's identity: changing it in the intent would create the stack
again and orphan the old one, so config apply refuses it. move-region stores the intent with
the new region and, in the same transaction, queues the destroy of the stack that exists
(rendered from the version applied now, so it plans in the old region) and the apply of the
new version behind it. Both wait for approval, whatever the config's setting, so a person
reviews the whole destroy and the whole create; if the destroy fails, the agent refuses the
apply. The same as config apply --replace-stack with the region edited for you.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, region, who string
			var tmpl templateFlags
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&region, "region", "", "the AWS region to move the stack to (e.g. eu-west-1)")
			whoFlag(fs, &who)
			tmpl.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || region == "" || len(args) != 1 {
					return usagef("want --cluster, --region and one argument: the config's name (or id)")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, args[0])
					if err != nil {
						return err
					}
					spec, from, err := withRegion(c.Spec, region)
					if err != nil {
						return fmt.Errorf("config %s: %w", c.Name, err)
					}
					if from == region {
						return usagef("--region: config %s is in %s already", c.Name, region)
					}
					applied, err := st.AppliedState(ctx, c.ID)
					if err != nil {
						return err
					}
					if !applied.Applied {
						return usagef("config %s has no applied stack to move: set \"region\": %q in its intent with `grape config apply`", c.Name, region)
					}
					normalized, err := tmpl.validate(ctx, spec)
					if err != nil {
						return err
					}
					nc, destroy, apply, err := st.ReplaceStack(ctx, cluster, c.Name, normalized, store.ConfigSettings{}, who)
					if err != nil {
						return err
					}
					fmt.Fprintln(cio.stdout, nc.ID)
					fmt.Fprintf(cio.stderr, "config %s/%s is at version %d in %s\nqueued, each awaiting approval after its plan: destroy %s (v%d, the stack in %s), then apply %s (v%d, in %s)\n",
						cluster, c.Name, nc.Version, region, destroy.ID, *destroy.ConfigVersion, from, apply.ID, *apply.ConfigVersion, region)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "config rename",
		args:    "OLD NEW",
		summary: "rename a config; nothing moves in the cloud (state is keyed by the config's id); recorded in the audit log",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, who string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || len(args) != 2 {
					return usagef("want --cluster and two arguments: the config's name (or id) and its new name")
				}
				if err := store.ValidateConfigName(args[1]); err != nil {
					return usagef("NEW: %v", err)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, args[0])
					if err != nil {
						return err
					}
					r, err := st.RenameConfig(ctx, cluster, c.ID, args[1], who)
					if err != nil {
						return err
					}
					fmt.Fprintf(cio.stdout, "config %s (%s) is now %s\n", c.Name, c.ID, r.Name)
					return nil
				})
			}
		},
	})
}

// configOf finds a config of a cluster by name or id, with the message a
// person can act on when it does not exist.
func configOf(ctx context.Context, st *store.Store, cluster, ref string) (store.Config, error) {
	c, err := st.GetConfig(ctx, cluster, ref)
	if isNotFound(err) {
		return store.Config{}, fmt.Errorf("config %q does not exist in cluster %s: see `grape config list --cluster %s`", ref, cluster, cluster)
	}
	return c, err
}

// waitReason is the line front ends show for a queued deployment whose
// config's state is held by an offline agent, or "".
func waitReason(ctx context.Context, st *store.Store, d store.Deployment) string {
	why, err := st.WaitReason(ctx, d, store.HolderOfflineAfter)
	if err != nil {
		return ""
	}
	return why
}

// withRegion returns the intent with its region set, and the region it had.
// The rest of the document is kept as it is; the templates' validation
// normalises it afterwards.
func withRegion(spec []byte, region string) ([]byte, string, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, "", fmt.Errorf("reading the stored intent: %w", err)
	}
	from := render.DefaultRegion
	if raw, ok := doc["region"]; ok {
		if err := json.Unmarshal(raw, &from); err != nil {
			return nil, "", fmt.Errorf("reading the stored intent's region: %w", err)
		}
	}
	to, err := json.Marshal(region)
	if err != nil {
		return nil, "", err
	}
	doc["region"] = to
	out, err := json.Marshal(doc)
	return out, from, err
}
