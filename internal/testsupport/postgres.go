// Package testsupport starts the real servers Grape's tests run against — a
// throwaway PostgreSQL cluster, moto, a git server — and cleans up after them.
// Each test gets its own database (cloned from a migrated template), so tests
// run in parallel without seeing each other's rows.
package testsupport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/localenv"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

// EnvDatabaseURL points the tests at an existing server instead of a throwaway
// one. Its role must be allowed to CREATE DATABASE.
const EnvDatabaseURL = "GRAPE_TEST_DATABASE_URL"

var (
	sharedMu       sync.Mutex
	sharedAdminURL string // superuser/admin URL of the shared server, database "postgres"
	templateName   string
	cleanups       []func()
)

// Main runs a package's tests and then stops every server they started.
// Use it from TestMain: func TestMain(m *testing.M) { testsupport.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	sharedMu.Unlock()
	os.Exit(code)
}

// StartPostgres starts a private throwaway cluster owned by the test, for
// tests that restart or stop the server (fault injection) and so must not
// share it. It is stopped when the test ends.
func StartPostgres(t testing.TB) *localenv.Postgres {
	t.Helper()
	dir := tempDirReachableByPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: dir, NoFsync: true})
	if err != nil {
		t.Fatalf("starting throwaway PostgreSQL (needs initdb and pg_ctl, e.g. Debian package postgresql-15): %v", err)
	}
	t.Cleanup(func() {
		if err := pg.Stop(context.Background()); err != nil {
			t.Logf("stopping test PostgreSQL: %v", err)
		}
		pg.Close()
	})
	return pg
}

// adminURL returns the shared server's admin URL, starting the server and
// building the migrated template database on first use.
func adminURL(t testing.TB) string {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedAdminURL != "" {
		return sharedAdminURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := os.Getenv(EnvDatabaseURL)
	if admin == "" {
		dir, err := os.MkdirTemp("", "grape-pg-")
		if err != nil {
			t.Fatalf("creating temp dir for PostgreSQL: %v", err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("chmod %s: %v", dir, err)
		}
		pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: dir, NoFsync: true})
		if err != nil {
			os.RemoveAll(dir)
			t.Fatalf("starting throwaway PostgreSQL (needs initdb and pg_ctl, e.g. Debian package postgresql-15; or set %s): %v", EnvDatabaseURL, err)
		}
		cleanups = append(cleanups, func() {
			_ = pg.Stop(context.Background())
			pg.Close()
			os.RemoveAll(dir)
		})
		admin = pg.SuperuserURL("postgres")
	}
	tmpl := "grape_template_" + randomSuffix()
	if err := createDatabase(ctx, admin, tmpl, ""); err != nil {
		t.Fatalf("creating template database: %v", err)
	}
	pool, err := pgxpool.New(ctx, withDatabase(admin, tmpl))
	if err != nil {
		t.Fatalf("connecting to template database: %v", err)
	}
	_, err = store.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		t.Fatalf("migrating template database: %v", err)
	}
	templateName = tmpl
	cleanups = append(cleanups, func() { _ = dropDatabase(context.Background(), admin, tmpl) })
	sharedAdminURL = admin
	return admin
}

// DatabaseURL creates a fresh, migrated database for this test and returns
// its URL (superuser). It is dropped when the test ends.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	admin := adminURL(t)
	name := "grape_test_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := createDatabase(ctx, admin, name, templateName); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(context.Background(), admin, name); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

// EmptyDatabaseURL creates a fresh database with no schema at all (for
// migration tests) and returns its URL.
func EmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	admin := adminURL(t)
	name := "grape_empty_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := createDatabase(ctx, admin, name, ""); err != nil {
		t.Fatalf("creating empty test database: %v", err)
	}
	t.Cleanup(func() { _ = dropDatabase(context.Background(), admin, name) })
	return withDatabase(admin, name)
}

// DB returns a pool on a fresh, migrated database of this test's own.
func DB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, DatabaseURL(t))
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", redact.URL(url), err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// MigratedDatabaseOn creates a migrated database on a test's private server.
func MigratedDatabaseOn(t testing.TB, pg *localenv.Postgres) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "grape_" + randomSuffix()
	if err := createDatabase(ctx, pg.SuperuserURL("postgres"), name, ""); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	u := pg.SuperuserURL(name)
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer pool.Close()
	if _, err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return u
}

func createDatabase(ctx context.Context, admin, name, template string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", redact.URL(admin), err)
	}
	defer conn.Close(ctx)
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	// Two packages' tests may clone the same template at the same moment only
	// on a shared server (GRAPE_TEST_DATABASE_URL); PostgreSQL then reports the
	// template as in use, so retry briefly.
	for i := 0; ; i++ {
		_, err = conn.Exec(ctx, sql)
		if err == nil || i == 50 || !strings.Contains(err.Error(), "is being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func dropDatabase(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

func withDatabase(rawURL, db string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(fmt.Sprintf("bad database URL: %v", err))
	}
	u.Path = "/" + db
	return u.String()
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tempDirReachableByPostgres is t.TempDir made traversable: PostgreSQL runs as
// the postgres user when the tests run as root.
func tempDirReachableByPostgres(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "grape-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Clean(dir)
}

// StartDurablePostgres is StartPostgres with fsync on, for benchmarks whose
// numbers must mean what they would on a real server.
func StartDurablePostgres(t testing.TB) *localenv.Postgres {
	t.Helper()
	dir := tempDirReachableByPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: dir})
	if err != nil {
		t.Fatalf("starting PostgreSQL (needs initdb and pg_ctl): %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()); pg.Close() })
	return pg
}
