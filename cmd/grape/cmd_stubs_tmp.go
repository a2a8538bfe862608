package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"

	"github.com/grapehq/grape/store"
)

// TEMPORARY until render/logstream land.
type templateFlags struct{}

func (t *templateFlags) register(fs *flag.FlagSet) {}

func (t *templateFlags) validate(ctx context.Context, spec []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(spec, &m); err != nil {
		return nil, fmt.Errorf("intent is not a JSON object: %w", err)
	}
	return spec, nil
}

func validateSchedule(s string) error {
	if s == "off" {
		return nil
	}
	_, err := cron.ParseStandard(s)
	return err
}

func followLogs(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, w io.Writer) error {
	st := store.New(pool)
	var after int64
	for {
		lines, err := st.ReadLogs(ctx, id, after, 1000)
		if err != nil {
			return err
		}
		for _, l := range lines {
			printLine(w, l)
			after = l.Seq
		}
		d, err := st.GetDeployment(ctx, id)
		if err != nil {
			return err
		}
		if d.Status.Final() && len(lines) == 0 {
			if d.Status != store.StatusSucceeded {
				return exitError{1}
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var _ = errors.New
