package main

import (
	"context"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// followLogs prints a deployment's lines live until it ends, then exits 0
// only if it succeeded — `grape logs --follow` and `grape deploy --follow`.
func followLogs(ctx context.Context, st *store.Store, dbURL string, id uuid.UUID, w io.Writer) error {
	status, err := followDeployment(ctx, st, dbURL, id, func(l store.LogLine) error {
		printLine(w, l)
		return nil
	})
	if err != nil {
		return err
	}
	if status != store.StatusSucceeded {
		fmt.Fprintf(w, "[grape] deployment %s ended %s\n", id, status)
		return exitError{1}
	}
	return nil
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
