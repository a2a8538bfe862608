package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one ordered schema change, shipped in the binary.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// SupabaseFile is the file name the migration has under supabase/migrations,
// where `supabase db push` wants <timestamp>_<name>.sql.
func (m Migration) SupabaseFile() string {
	return fmt.Sprintf("20261127%06d_%s.sql", m.Version, m.Name)
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations are not numbered 1..n: %04d_%s is at position %d", m.Version, m.Name, i+1)
		}
	}
	return out, nil
}

// migrationLockKey is the advisory lock that serialises concurrent migrators
// (two agents starting at once, say). Any constant works; this one spells "grape".
const migrationLockKey = 0x6772617065

// Migrate applies the migrations that have not run yet, each in its own
// transaction, holding a session advisory lock so two processes never run
// them at once. It returns the versions it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring connection for migrations: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return nil, fmt.Errorf("taking migration lock: %w", err)
	}
	defer func() {
		// Unlock on a fresh context: the caller's may be done, and a lock left
		// on a pooled connection would block the next migrator forever.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey)
	}()

	applied := map[int]bool{}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('grape_schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("checking for migrations table: %w", err)
	}
	if exists {
		rows, err := conn.Query(ctx, "SELECT version FROM grape_schema_migrations")
		if err != nil {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
		for _, v := range versions {
			applied[v] = true
		}
	}

	var done []int
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// Simple protocol: a migration file holds many statements.
			_, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m.Version)
	}
	return done, nil
}

// CheckSchema fails, saying what to run, when the database's schema is older
// than this binary's migrations (an agent must not run against it).
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	var have int
	err = pool.QueryRow(ctx, `SELECT CASE WHEN to_regclass('grape_schema_migrations') IS NULL THEN 0
ELSE (SELECT coalesce(max(version), 0) FROM grape_schema_migrations) END`).Scan(&have)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if have < len(migs) {
		return fmt.Errorf("the database schema is at version %d, this grape needs %d: run `grape migrate` first", have, len(migs))
	}
	return nil
}
