package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{
		name:    "state move",
		summary: "hand a config's local state (and its kept versions) from the agent holding it to another agent of the cluster, agent to agent (audited)",
		long: `The holder and the receiving agent must both be running; the receiver must
have been started with --state-handoff-addr HOST:PORT. The state goes from
agent to agent over a one-time TLS connection whose certificate the holder
pins; the database carries only the request, never the state. Refused while a
deployment of the config runs or awaits approval, or terraform holds the
state's lock. When it is done the receiver holds the state and the config's
deployments run there; the old holder keeps its copy out of the live path,
under <data-dir>/state-moved/ (docs/operations.md, "Moving a local state to
another agent").`,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster, cfgRef, to, reason, who string
			var timeout time.Duration
			var noWait bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", "cluster id")
			fs.StringVar(&cfgRef, "config", "", "config name or id")
			fs.StringVar(&to, "to-agent", "", "id of the agent to hand the state to (see `grape status --cluster C`)")
			fs.StringVar(&reason, "reason", "", "why (recorded in the audit log)")
			fs.DurationVar(&timeout, "timeout", 5*time.Minute, "how long the move may take before it fails")
			fs.BoolVar(&noWait, "no-wait", false, "print the move's id and return; `grape state moves` shows how it ends")
			whoFlag(fs, &who)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if cluster == "" || cfgRef == "" || to == "" {
					return usagef("--cluster, --config and --to-agent are required")
				}
				if timeout < 10*time.Second || timeout > 24*time.Hour {
					return usagef("--timeout: want 10s to 24h, got %s", timeout)
				}
				return withStore(ctx, db, func(st *store.Store) error {
					c, err := configOf(ctx, st, cluster, cfgRef)
					if err != nil {
						return err
					}
					m, err := st.RequestStateMove(ctx, store.StateMoveRequest{ClusterID: cluster, ConfigID: c.ID, ToAgent: to,
						Actor: who, Reason: reason, Timeout: timeout, OnlineWithin: store.HolderOfflineAfter})
					if errors.Is(err, store.ErrMoveRefused) {
						return fmt.Errorf("cannot move the state of %s: %w", c.Name, errors.Unwrap(err))
					}
					if err != nil {
						return err
					}
					if noWait {
						fmt.Fprintln(cio.stdout, m.ID)
						return nil
					}
					fmt.Fprintf(cio.stderr, "move %s: the state of %s goes from agent %s to agent %s\n", m.ID, c.Name, m.FromAgent, m.ToAgent)
					final, err := followMove(ctx, st, m, cio.stderr)
					if err != nil {
						return err
					}
					if final.Status == store.MoveFailed {
						return fmt.Errorf("move %s failed: %s", final.ID, ptr.Deref(final.Error))
					}
					took := ptr.Deref(final.FinishedAt).Sub(final.CreatedAt).Round(time.Millisecond)
					fmt.Fprintf(cio.stdout, "agent %s holds the state of %s now (state sha256 %s; files: %d; took %s); agent %s keeps its copy under <data-dir>/state-moved/%s/%s/\n",
						final.ToAgent, c.Name, ptr.Deref(final.StateSHA256), ptr.Deref(final.Files), took, final.FromAgent, cluster, c.ID)
					fmt.Fprintf(cio.stdout, "next: grape deploy --cluster %s --config %s --action plan --follow (expect no changes)\n", cluster, c.Name)
					return nil
				})
			}
		},
	})

	registerList(listCommand[store.StateMove]{
		name:            "state moves",
		summary:         "list a cluster's state moves, newest first",
		clusterRequired: true,
		load: func(st *store.Store, ctx context.Context, cluster string) ([]store.StateMove, error) {
			return st.ListStateMoves(ctx, cluster, 100)
		},
		header: []string{"MOVE", "CONFIG", "FROM", "TO", "STATUS", "REQUESTED", "BY", "ERROR"},
		row: func(m store.StateMove) []string {
			return []string{m.ID.String(), m.ConfigID.String(), m.FromAgent, m.ToAgent, string(m.Status),
				m.CreatedAt.Format(time.RFC3339), m.RequestedBy, ptr.Deref(m.Error)}
		},
	})
}

// followMove prints a move's steps until it ends (or a little after its
// deadline, when the agents' expiry sweep has failed it).
func followMove(ctx context.Context, st *store.Store, m store.StateMove, w io.Writer) (store.StateMove, error) {
	ctx, cancel := context.WithDeadline(ctx, m.ExpiresAt.Add(30*time.Second))
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := m.Status
	for {
		cur, err := st.GetStateMove(ctx, m.ID)
		if err != nil {
			return store.StateMove{}, err
		}
		if cur.Status != last {
			switch cur.Status {
			case store.MoveListening:
				fmt.Fprintf(w, "agent %s listens at %s (certificate sha256 %s)\n", cur.ToAgent, ptr.Deref(cur.ReceiverAddr), ptr.Deref(cur.ReceiverCertSHA256))
			case store.MoveSending:
				fmt.Fprintf(w, "agent %s is sending the state\n", cur.FromAgent)
			}
			last = cur.Status
		}
		if cur.Status.Final() {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("move %s is still %s: are agents %s and %s running? (`grape state moves --cluster %s`): %w",
				cur.ID, cur.Status, cur.FromAgent, cur.ToAgent, cur.ClusterID, ctx.Err())
		case <-tick.C:
		}
	}
}
