package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
	"github.com/grapehq/grape/termsafe"
)

// agentOfflineAfter is how old an agent's last heartbeat may be for the CLI
// to count it online (the portal's default too).
const agentOfflineAfter = 30 * time.Second

// linePrinter writes log lines to the user's terminal. Lines come from
// terraform, providers and any agent credential of the cluster, so they are
// cleaned first (termsafe): colours survive on a terminal, nothing else
// that could move the cursor, clear the screen or retitle the window does.
type linePrinter struct {
	w      io.Writer
	colour bool
}

func newLinePrinter(cio *cmdIO, noColor bool) linePrinter {
	f, _ := cio.stdout.(*os.File)
	return linePrinter{w: cio.stdout, colour: termsafe.Colour(f, noColor, cio.getenv)}
}

func (p linePrinter) line(l store.LogLine) {
	text := termsafe.Clean(l.Line, p.colour)
	if l.Stream == store.StreamAgent {
		fmt.Fprintf(p.w, "[grape] %s\n", text)
		return
	}
	fmt.Fprintln(p.w, text)
}

func noColorFlag(fs *flag.FlagSet, v *bool) {
	fs.BoolVar(v, "no-color", false, "print log lines without colours (also when NO_COLOR is set or output is not a terminal)")
}

// followLogs prints a deployment's lines live until it ends, then exits 0
// only if it succeeded — `grape logs --follow` and `grape deploy --follow`.
// A deployment still queued is said to be, with its place in the queue and
// the cluster's agents online, so the wait is not silent.
func followLogs(ctx context.Context, st *store.Store, dbURL string, id uuid.UUID, p linePrinter) error {
	if err := sayQueued(ctx, st, id, p.w); err != nil {
		return err
	}
	status, err := followDeployment(ctx, st, dbURL, id, func(l store.LogLine) error {
		p.line(l)
		return nil
	})
	if err != nil {
		return err
	}
	if status != store.StatusSucceeded {
		fmt.Fprintf(p.w, "[grape] deployment %s ended %s\n", id, status)
		return exitError{1}
	}
	return nil
}

func sayQueued(ctx context.Context, st *store.Store, id uuid.UUID, w io.Writer) error {
	d, err := st.GetDeployment(ctx, id)
	if err != nil || d.Status != store.StatusQueued {
		return err
	}
	q, err := st.QueuePosition(ctx, id, agentOfflineAfter)
	if err != nil {
		return err
	}
	config := d.ConfigID.String()
	if c, err := st.GetConfigByID(ctx, d.ConfigID); err == nil {
		config = c.Name
	}
	msg := fmt.Sprintf("[grape] deployment %s is queued: %s in config %s's queue", id, ordinal(q.Position), config)
	if q.Active != nil {
		msg += fmt.Sprintf(", behind deployment %s", q.Active)
	}
	switch q.AgentsOnline {
	case 0:
		msg += fmt.Sprintf("; no agent of cluster %s is online: it runs when one starts (grape agent --cluster %s)", d.ClusterID, d.ClusterID)
	case 1:
		msg += fmt.Sprintf("; 1 agent of cluster %s is online", d.ClusterID)
	default:
		msg += fmt.Sprintf("; %d agents of cluster %s are online", q.AgentsOnline, d.ClusterID)
	}
	fmt.Fprintln(w, msg)
	// Its config's local state may be held by an agent that is offline:
	// then only that agent can run it, whatever else is online.
	if why := waitReason(ctx, st, d); why != "" {
		fmt.Fprintf(w, "[grape] %s\n", why)
	}
	return nil
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s", n, suffix)
}

// followDeployment runs logstream.Follow with a notifier of its own: the command
// follows one deployment, so this is the process's one LISTEN connection.
func followDeployment(ctx context.Context, st *store.Store, dbURL string, id uuid.UUID, emit func(store.LogLine) error) (store.Status, error) {
	n, err := notify.New(dbURL, notify.Options{Name: "grape-follow"})
	if err != nil {
		return "", err
	}
	return logstream.Follow(ctx, st, n, id, 0, emit)
}

func validateSchedule(s string) error {
	_, err := drift.ParseSchedule(s)
	return err
}
