// Package store is Grape's control plane in PostgreSQL: clusters, configs (the
// intent), the deployment queue with its claims and leases, logs and drift
// reports. All SQL lives here, next to the types it fills.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers act on.
var (
	// ErrNotFound: no such row (or not visible to this role).
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the deployment is no longer ours — its lease expired and
	// another agent ended or requeued it. The run must stop.
	ErrLeaseLost = errors.New("lease lost: the deployment is no longer claimed by this agent")
	// ErrInvalid: the request breaks a rule the database enforces.
	ErrInvalid = errors.New("invalid")
)

// Store wraps a pgx pool with Grape's queries.
type Store struct {
	pool *pgxpool.Pool
	q    dbtx // set inside WithClusterLock: queries run in that transaction
	// asUser: the transaction runs as a signed-in user (AsUser), so the
	// statements that need the owner's trust go through the database's
	// checked functions instead.
	asUser bool
}

// in is s with its queries in tx.
func (s *Store) in(tx pgx.Tx) *Store { return &Store{pool: s.pool, q: tx, asUser: s.asUser} }

// dbtx is what a pool and a transaction have in common.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	Begin(ctx context.Context) (pgx.Tx, error)
}

func (s *Store) db() dbtx {
	if s.q != nil {
		return s.q
	}
	return s.pool
}

// New returns a Store on pool. The pool's lifetime is the caller's.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Open connects a pool to url and checks the server is reachable.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return OpenAs(ctx, url, "")
}

// OpenAs is Open for a session acting for someone: actor (e.g. cli:alice)
// is what the audit trail records for the changes it makes as the tables'
// owner. Agent roles and signed-in users are recorded as themselves
// whatever it says (migration 0008_access).
func OpenAs(ctx context.Context, url, actor string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors already redact the password.
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	if actor != "" {
		cfg.ConnConfig.RuntimeParams["grape.actor"] = actor
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to database %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// execer is what a pool, a connection and a transaction have in common.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

// Postgres error codes Grape reacts to.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
	codeCheckViolation      = "23514"
)

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
