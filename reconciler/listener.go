package reconciler

import (
	"fmt"
	"log/slog"

	"github.com/grapehq/grape/store/notify"
)

// notifierFor is the notifier an agent subscribes with: the process's own
// (Options.Notifier), or one on connString for this agent alone; nil when
// the agent only polls.
func notifierFor(connString string, o Options, log *slog.Logger) (*notify.Notifier, error) {
	switch {
	case o.PollOnly:
		return nil, nil
	case o.Notifier != nil:
		return o.Notifier, nil
	}
	n, err := notify.New(connString, notify.Options{Name: "grape-listener", Logger: log})
	if err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	return n, nil
}

// listen subscribes to the cluster's queue events. Notifications only wake
// the claim loop (and hint at cancels, which the row confirms); polling stays
// the source of truth, so an event lost while reconnecting costs at most one
// poll interval, and resync makes the loop look at once. Without a notifier
// both channels are nil: the loop polls only.
func (a *Agent) listen() (events <-chan notify.ClusterEvent, resync <-chan struct{}, stop func()) {
	if a.notifier == nil {
		return nil, nil, func() {}
	}
	sub := notify.Subscribe(a.notifier, notify.ClusterEvents(a.opts.ClusterID), 64)
	return sub.C, sub.Resync, sub.Close
}
