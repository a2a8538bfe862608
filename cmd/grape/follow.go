package main

import (
	"context"
	"fmt"
	"io"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
)

// followLogs prints a deployment's lines live until it ends, then exits 0
// only if it succeeded — `grape logs --follow` and `grape deploy --follow`.
func followLogs(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, w io.Writer) error {
	status, err := logstream.Follow(ctx, pool, id, 0, func(l store.LogLine) error {
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

func validateSchedule(s string) error {
	_, err := drift.ParseSchedule(s)
	return err
}
