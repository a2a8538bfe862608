package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/grapehq/grape/store"
)

// agentRoleFlags are the agent-role switches of `grape cluster create` and
// `grape cluster agent-role`.
type agentRoleFlags struct {
	printSQL    bool
	rotate      bool
	noAgentRole bool // cluster create only
}

func (f *agentRoleFlags) register(fs *flag.FlagSet, forCreate bool) {
	fs.BoolVar(&f.printSQL, "print-sql", false, "print the SQL for an admin to run (e.g. in the Supabase SQL editor) instead of changing anything; the agent's password goes to stderr")
	fs.BoolVar(&f.rotate, "rotate-password", false, "give an existing agent role a new password (running agents must be given it)")
	if forCreate {
		fs.BoolVar(&f.noAgentRole, "no-agent-role", false, "do not create the cluster's agent login role")
	}
}

// createClusterWithAgentRole is `grape cluster create`: the cluster, then
// (unless --no-agent-role) its agents' login role, whose password is printed
// once. With --print-sql it prints the SQL for both and touches nothing.
func createClusterWithAgentRole(ctx context.Context, cio *cmdIO, db, id, description string, f agentRoleFlags) error {
	if f.printSQL {
		return printAgentRoleSQL(cio, db, id, description, true, !f.noAgentRole)
	}
	return withStore(ctx, db, func(st *store.Store) error {
		c, err := st.CreateCluster(ctx, id, description)
		if err != nil {
			return err
		}
		fmt.Fprintln(cio.stdout, c.ID)
		if f.noAgentRole {
			return nil
		}
		return provisionAgentRole(ctx, cio, st, db, c.ID, f.rotate)
	})
}

// provisionAgentRole creates (or keeps, or rotates) the cluster's agent role
// and shows a new password exactly once, with the URL the agent connects with.
func provisionAgentRole(ctx context.Context, cio *cmdIO, st *store.Store, adminURL, clusterID string, rotate bool) error {
	role, err := st.CreateAgentRole(ctx, clusterID, store.AgentRoleOptions{RotatePassword: rotate})
	if err != nil {
		return err
	}
	if role.Password == "" {
		fmt.Fprintf(cio.stdout, "agent role %s of cluster %s exists; its password is unchanged (--rotate-password sets a new one)\n", role.Name, clusterID)
		return nil
	}
	what := "created"
	if role.Rotated {
		what = "has a new password; give it to every running agent of the cluster"
	}
	agentURL, err := store.AgentURL(adminURL, role.Name, role.Password)
	if err != nil {
		return fmt.Errorf("building the agent's database URL: %w", err)
	}
	fmt.Fprintf(cio.stdout, `agent role %s of cluster %s %s.
Its password is shown only this once; the database keeps a hash of it:
  password: %s
Run the cluster's agents with:
  GRAPE_DATABASE_URL='%s' grape agent --cluster %s
`, role.Name, clusterID, what, role.Password, agentURL, clusterID)
	return nil
}

// printAgentRoleSQL writes the script to stdout and the password, which the
// script does not contain, to stderr: `> role.sql` keeps it out of the file.
func printAgentRoleSQL(cio *cmdIO, adminURL, id, description string, withCluster, withRole bool) error {
	if err := store.ValidateClusterID(id); err != nil {
		return usagef("%v", err)
	}
	w := cio.stdout
	fmt.Fprintf(w, "-- grape: cluster %s; run as the owner of the Grape tables (Supabase: the SQL editor, as postgres).\nBEGIN;\n", id)
	if withCluster {
		fmt.Fprintf(w, "INSERT INTO clusters (id, description) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING;\n", sqlLiteral(id), sqlLiteral(description))
	}
	if withRole {
		password := store.GenerateAgentPassword()
		script, err := store.AgentRoleSQL(id, password)
		if err != nil {
			return err
		}
		fmt.Fprint(w, script)
		role := store.AgentRoleName(id)
		url := fmt.Sprintf("postgres://%s:%s@HOST:5432/DATABASE", role, password)
		if adminURL != "" {
			if u, err := store.AgentURL(adminURL, role, password); err == nil {
				url = u
			}
		}
		fmt.Fprintf(cio.stderr, `The SQL sets this password for agent role %s (shown only now; the SQL holds its hash):
  password: %s
Once the SQL has run, start the cluster's agents with:
  GRAPE_DATABASE_URL='%s' grape agent --cluster %s
`, role, password, url, id)
	}
	fmt.Fprintln(w, "COMMIT;")
	return nil
}

func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func init() {
	register(&command{
		name:    "cluster agent-role",
		args:    "ID",
		summary: "create, re-key or revoke the login role of a cluster's agents",
		long: `Each cluster's agents log in as their own role, grape_agent_<id>, which
PostgreSQL's row-level security confines to that cluster's rows (see
docs/security.md). The password is generated, shown once, and stored only as
a SCRAM-SHA-256 hash. Re-running keeps it unless --rotate-password.
--revoke cuts the role off at once, open sessions included.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db string
			var f agentRoleFlags
			var revoke bool
			dbFlag(fs, &db)
			f.register(fs, false)
			fs.BoolVar(&revoke, "revoke", false, "remove the cluster's agent role: its sessions lose access at once, and it can no longer log in")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want exactly one cluster id")
				}
				if err := store.ValidateClusterID(args[0]); err != nil {
					return usagef("%v", err)
				}
				if revoke && (f.printSQL || f.rotate) {
					return usagef("--revoke cannot be combined with --print-sql or --rotate-password")
				}
				if f.printSQL {
					return printAgentRoleSQL(cio, db, args[0], "", false, true)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if revoke {
						if err := st.DropAgentRole(ctx, args[0]); err != nil {
							return err
						}
						fmt.Fprintf(cio.stdout, "agent role %s revoked\n", store.AgentRoleName(args[0]))
						return nil
					}
					return provisionAgentRole(ctx, cio, st, db, args[0], f.rotate)
				})
			}
		},
	})
	register(&command{
		name:    "cluster owner",
		args:    "ID",
		summary: "set which Supabase user or organisation sees a cluster from a browser",
		long: `A Supabase browser client (role authenticated) sees a cluster, and its configs,
deployments, logs and drift reports, when the cluster's owner is its user id
(auth.uid()) or its organisation is the JWT's app_metadata.org_id. Flags left
out clear that part: with neither, no browser user sees the cluster.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, user, org string
			dbFlag(fs, &db)
			fs.StringVar(&user, "user", "", "the owning Supabase user's id (a UUID, auth.users.id)")
			fs.StringVar(&org, "org", "", "the owning organisation, as in the users' JWT app_metadata.org_id")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want exactly one cluster id")
				}
				var o store.ClusterOwnership
				if user != "" {
					id, err := uuid.Parse(user)
					if err != nil {
						return usagef("--user: want a UUID (auth.users.id), got %q", user)
					}
					o.OwnerID = &id
				}
				if org != "" {
					o.OrgID = &org
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if err := st.SetClusterOwnership(ctx, args[0], o); err != nil {
						if errors.Is(err, store.ErrInvalid) {
							return usagef("%v", err)
						}
						return err
					}
					fmt.Fprintf(cio.stdout, "cluster %s: owner %s, organisation %s\n", args[0], orNone(user), orNone(org))
					return nil
				})
			}
		},
	})
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
