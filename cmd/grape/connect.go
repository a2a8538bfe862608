package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/store"
)

// openStoreRetrying connects a long-running process (the agent) to the
// control plane, retrying with backoff while the database is unreachable —
// an agent that starts before its database (a reboot) comes up when the
// database does. Mistakes that waiting cannot fix (a wrong password, an
// unknown database, a bad URL, a schema not migrated) fail at once.
func openStoreRetrying(ctx context.Context, url string, log *slog.Logger) (*store.Store, *pgxpool.Pool, error) {
	retry := backoff.New(backoff.Policy{Initial: time.Second, Max: 30 * time.Second, Jitter: 0.5})
	for {
		st, pool, err := openStore(ctx, url)
		if err == nil {
			if err = store.CheckSchema(ctx, pool); err == nil {
				return st, pool, nil
			}
			pool.Close()
			return nil, nil, err
		}
		if !retryableConnectError(err) || ctx.Err() != nil {
			return nil, nil, err
		}
		wait := retry.Next()
		log.Warn("database unreachable; retrying", "err", err, "retry_in", wait.String())
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
}

func retryableConnectError(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 28: invalid authorization; 3D: unknown database; 42: syntax or
		// access rule. 57P0x (shutting down, cannot connect now) is transient.
		return !strings.HasPrefix(pgErr.Code, "28") && !strings.HasPrefix(pgErr.Code, "3D") && !strings.HasPrefix(pgErr.Code, "42")
	}
	return !strings.Contains(err.Error(), "parsing database URL")
}
