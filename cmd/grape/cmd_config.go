package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{name: "config", summary: "manage configs: the intent of a cluster (apply, show, list, history)"})

	register(&command{
		name:    "config apply",
		summary: "validate an intent JSON against the templates and store it (create or update); prints the config id",
		long: `The intent is validated exactly as the agent will validate it (see docs/intent.md);
nothing is stored when it is invalid. The config's version increases when anything changed.
The region and the state backend of an applied config are where its stack lives, and the
templates mark inputs whose change replaces the stack (# grape:stack-identity, e.g. the VPC's
cidr; docs/operations.md): changing them is refused (the next apply would create the stack again and orphan the old one) unless
--replace-stack queues the destroy of the old stack ahead of the change, --migrate-backend
queues a deployment on which the agent holding a local state migrates it to the new backend
(terraform init -migrate-state), or --state-moved says you copied the state there yourself.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var (
				db, cluster, name, file, schedule, policySet string
				approval, remediate                          optionalBool
				noPolicySet, replaceStack, stateMoved        bool
				migrateBackend                               bool
				approvalTimeout                              time.Duration
				who                                          string
				tmpl                                         templateFlags
			)
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&name, "name", "", "config name (lowercase letters, digits, - and _)")
			fs.StringVar(&file, "f", "", "intent JSON file (- for stdin)")
			fs.Var(&approval, "require-approval", "deployments of this config stop after plan until approved (true/false)")
			fs.Var(&remediate, "auto-remediate", "queue an apply automatically when drift is found (true/false)")
			fs.StringVar(&schedule, "drift-schedule", "", "this config's drift schedule: a cron expression, @every 6h, or off")
			fs.StringVar(&policySet, "policy-set", "", "policy set (sets/<name>/ of the agents' policy sources) that judges this config's plans besides the common policies")
			fs.BoolVar(&noPolicySet, "no-policy-set", false, "clear the config's policy set: only the common policies judge it")
			fs.DurationVar(&approvalTimeout, "approval-timeout", 0, "how long a plan may await approval before it expires, cancelled and discarded (at least 1m; default for a new config 24h; 0 keeps the stored value)")
			fs.BoolVar(&replaceStack, "replace-stack", false, "the intent moves or replaces an applied stack (region, backend, or an input the templates mark as its identity): queue the destroy of the stack that exists, store the intent, and queue its apply behind the destroy")
			fs.BoolVar(&stateMoved, "state-moved", false, "the intent changes the state backend of an applied config and you copied its state there (docs/operations.md); recorded with --as")
			fs.BoolVar(&migrateBackend, "migrate-backend", false, "the intent moves an applied config's local state to a shared backend (s3): store it and queue an apply on which the agent holding the state runs terraform init -migrate-state first (shown in its log and audit commit); recorded with --as")
			whoFlag(fs, &who)
			tmpl.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || name == "" {
					return usagef("--cluster and --name are required")
				}
				if err := store.ValidateClusterID(cluster); err != nil {
					return usagef("--cluster: %v", err)
				}
				if err := store.ValidateConfigName(name); err != nil {
					return usagef("--name: %v", err)
				}
				spec, err := readSpec(file, cio.stdin)
				if err != nil {
					return err
				}
				cat, err := tmpl.catalog(ctx, "")
				if err != nil {
					return err
				}
				in, err := cat.Validate(spec)
				if err != nil {
					return err
				}
				normalized := in.JSON()
				set := store.ConfigSettings{RequireApproval: approval.ptr(), AutoRemediate: remediate.ptr()}
				if approvalTimeout != 0 {
					if approvalTimeout < time.Minute {
						return usagef("--approval-timeout %s: use at least 1m (e.g. 24h)", approvalTimeout)
					}
					set.ApprovalTimeout = &approvalTimeout
				}
				if schedule != "" {
					if err := validateSchedule(schedule); err != nil {
						return usagef("--drift-schedule: %v", err)
					}
					set.DriftSchedule = &schedule
				}
				switch {
				case policySet != "" && noPolicySet:
					return usagef("--policy-set and --no-policy-set are exclusive")
				case policySet != "":
					if err := store.ValidatePolicySet(policySet); err != nil {
						return usagef("--policy-set: %v", err)
					}
					set.PolicySet = &policySet
				case noPolicySet:
					set.PolicySet = ptr.To("")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if _, err := st.GetCluster(ctx, cluster); err != nil {
						if isNotFound(err) {
							return fmt.Errorf("cluster %q does not exist: create it with `grape cluster create %s`", cluster, cluster)
						}
						return err
					}
					if !replaceStack {
						if err := refuseStackInputChange(ctx, st, cat, cluster, name, normalized, file); err != nil {
							return err
						}
					}
					if migrateBackend {
						if stateMoved || replaceStack {
							return usagef("--migrate-backend, --state-moved and --replace-stack are exclusive")
						}
						return migrateBackendApply(ctx, cio, st, cluster, name, normalized, set, who, file)
					}
					if stateMoved {
						if replaceStack {
							return usagef("--state-moved and --replace-stack are exclusive")
						}
						c, err := st.MoveStateBackend(ctx, cluster, name, normalized, set, who)
						if err != nil {
							return err
						}
						fmt.Fprintln(cio.stdout, c.ID)
						fmt.Fprintf(cio.stderr, "config %s/%s is at version %d with its new backend; queue a plan and expect \"No changes\"\n", cluster, name, c.Version)
						return nil
					}
					if replaceStack {
						c, destroy, apply, err := st.ReplaceStack(ctx, cluster, name, normalized, set, who)
						if err != nil {
							return err
						}
						fmt.Fprintln(cio.stdout, c.ID)
						fmt.Fprintf(cio.stderr, "config %s/%s is at version %d\nqueued: destroy %s (v%d, the stack that exists), then apply %s (v%d)\n",
							cluster, name, c.Version, destroy.ID, *destroy.ConfigVersion, apply.ID, *apply.ConfigVersion)
						return nil
					}
					c, err := st.UpsertConfig(ctx, cluster, name, normalized, set)
					if errors.Is(err, store.ErrStackIdentity) {
						return fmt.Errorf("%w\nnothing was stored%s", err, backendMoveSteps(ctx, st, cluster, name, normalized, file))
					}
					if err != nil {
						return err
					}
					fmt.Fprintln(cio.stdout, c.ID)
					fmt.Fprintf(cio.stderr, "config %s/%s is at version %d\n", cluster, name, c.Version)
					return nil
				})
			}
		},
	})

	register(&command{
		name:    "config show",
		args:    "NAME|ID",
		summary: "print a config: its settings and intent",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id (needed with a name)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want one config name or id")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := st.GetConfig(ctx, cluster, args[0])
					if err != nil {
						return err
					}
					return writeJSON(cio.stdout, c)
				})
			}
		},
	})

	register(&command{
		name:    "config list",
		summary: "list configs",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "only this cluster")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				return withStore(ctx, db, func(st *store.Store) error {
					cfgs, err := st.ListConfigs(ctx, cluster)
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "CLUSTER\tNAME\tID\tVERSION\tAPPROVAL\tUPDATED")
					for _, c := range cfgs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%v\t%s\n", c.ClusterID, c.Name, c.ID, c.Version, c.RequireApproval, c.UpdatedAt.Format("2006-01-02 15:04"))
					}
					return tw.Flush()
				})
			}
		},
	})

	register(&command{
		name:    "config history",
		args:    "NAME|ID",
		summary: "list a config's versions",
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster string
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id (needed with a name)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want one config name or id")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := st.GetConfig(ctx, cluster, args[0])
					if err != nil {
						return err
					}
					hist, err := st.ConfigHistory(ctx, c.ID)
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "VERSION\tCREATED\tINTENT")
					for _, v := range hist {
						compact, _ := json.Marshal(v.Spec)
						fmt.Fprintf(tw, "%d\t%s\t%s\n", v.Version, v.CreatedAt.Format("2006-01-02 15:04:05"), compact)
					}
					return tw.Flush()
				})
			}
		},
	})
}

// optionalBool is a flag that remembers whether it was given.
type optionalBool struct {
	set, v bool
}

func (o *optionalBool) String() string {
	if o == nil || !o.set {
		return ""
	}
	return fmt.Sprint(o.v)
}

func (o *optionalBool) Set(s string) error {
	switch s {
	case "true", "1", "yes":
		o.v = true
	case "false", "0", "no":
		o.v = false
	default:
		return fmt.Errorf("want true or false, got %q", s)
	}
	o.set = true
	return nil
}

func (o *optionalBool) IsBoolFlag() bool { return true }

func (o *optionalBool) ptr() *bool {
	if !o.set {
		return nil
	}
	return &o.v
}

// refuseStackInputChange refuses an intent that changes an input the
// templates mark as the stack's identity while the stack Grape applied
// still exists: the database's identity guard cannot read templates, so the
// CLI checks here (and the agent again before rendering). Nothing is stored.
func refuseStackInputChange(ctx context.Context, st *store.Store, cat *render.Catalog, cluster, name string, spec json.RawMessage, file string) error {
	old, err := st.GetConfig(ctx, cluster, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	applied, err := st.AppliedState(ctx, old.ID)
	if err != nil || !applied.Applied {
		return err
	}
	was := old.Spec
	if applied.Version != 0 {
		v, err := st.ConfigAtVersion(ctx, old.ID, applied.Version)
		if err != nil {
			return fmt.Errorf("reading the applied version of %s/%s: %w", cluster, name, err)
		}
		was = v.Spec
	}
	changes := stateguard.StackInputChanges(cat, was, spec)
	if len(changes) == 0 {
		return nil
	}
	if file == "" || file == "-" {
		file = "FILE"
	}
	return fmt.Errorf("config %s/%s: the intent changes %s; Grape applied this stack (v%d) and has not destroyed it, so applying would replace it\nnothing was stored\n"+
		"to replace the stack on purpose (a destroy of the one that exists, then an apply, each awaiting approval): `grape config apply --cluster %s --name %s --replace-stack -f %s`\n"+
		"or destroy it first: `grape deploy --cluster %s --config %s --action destroy`, then apply the intent",
		cluster, name, strings.Join(changes, "; "), applied.Version, cluster, name, file, cluster, name)
}

// backendMoveSteps names the exact commands that move an applied config's
// stack or state where a refused intent asks for: the state to the new
// backend, or the stack to the new region ("" when it cannot tell).
func backendMoveSteps(ctx context.Context, st *store.Store, cluster, name string, spec json.RawMessage, file string) string {
	old, err := st.GetConfig(ctx, cluster, name)
	if err != nil {
		return ""
	}
	change := stateguard.IdentityChange(old.Spec, spec)
	if strings.HasPrefix(change, "region ") {
		var in struct {
			Region string `json:"region"`
		}
		if json.Unmarshal(spec, &in) != nil || in.Region == "" {
			return ""
		}
		return fmt.Sprintf("\nto move the stack to %s (a destroy in the old region and a create in the new one, each awaiting approval): `grape config move-region --cluster %s --region %s %s`",
			in.Region, cluster, in.Region, name)
	}
	if !strings.HasPrefix(change, "backend ") {
		return ""
	}
	m := stateguard.BackendMove{ClusterID: cluster, ConfigID: old.ID.String(), Name: old.Name, From: old.Spec, To: spec, IntentFile: file}
	if h, err := st.StateHolderOf(ctx, old.ID); err == nil {
		m.Holder = h.AgentID
	}
	return "\nto keep the stack and move its state to the new backend:" + m.Text()
}

// migrateBackendApply stores an intent that moves an applied config's local
// state to a shared backend and queues the migrating deployment. Other
// backend changes (from S3, or to local) are refused with the commands that
// move the state by hand.
func migrateBackendApply(ctx context.Context, cio *cmdIO, st *store.Store, cluster, name string, spec json.RawMessage, set store.ConfigSettings, who, file string) error {
	old, err := configOf(ctx, st, cluster, name)
	if err != nil {
		return err
	}
	change := stateguard.IdentityChange(old.Spec, spec)
	if !strings.HasPrefix(change, "backend ") {
		return usagef("--migrate-backend: the intent does not change the state backend of %s (it changes %q); apply it without --migrate-backend", name, change)
	}
	from, _ := stateguard.LocationOf(old.Spec, cluster, old.ID.String(), "", "")
	to, _ := stateguard.LocationOf(spec, cluster, old.ID.String(), "", "")
	if from.Backend != "local" || to.Backend == "local" {
		m := stateguard.BackendMove{ClusterID: cluster, ConfigID: old.ID.String(), Name: old.Name, From: old.Spec, To: spec, IntentFile: file}
		return fmt.Errorf("--migrate-backend moves a local state to a shared backend; %s is %s → %s: move the state by hand:%s", name, from.Backend, to.Backend, m.Text())
	}
	c, d, err := st.MigrateStateBackend(ctx, cluster, name, spec, set, who, false)
	if err != nil {
		return err
	}
	fmt.Fprintln(cio.stdout, c.ID)
	holder := "the agent that holds its state"
	if h, err := st.StateHolderOf(ctx, c.ID); err == nil {
		holder = "agent " + h.AgentID + ", which holds its state,"
	}
	fmt.Fprintf(cio.stderr, "config %s/%s is at version %d with its new backend; queued apply %s: %s migrates the state to %s before planning\n",
		cluster, name, c.Version, d.ID, holder, to)
	return nil
}
