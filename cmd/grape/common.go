package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/store"
)

// dbFlag registers --database-url.
func dbFlag(fs *flag.FlagSet, url *string) {
	fs.StringVar(url, "database-url", "", "PostgreSQL connection URL of the control plane (also DATABASE_URL)")
}

// openStore connects to the control plane.
func openStore(ctx context.Context, url string) (*store.Store, *pgxpool.Pool, error) {
	if url == "" {
		return nil, nil, usagef("no database: pass --database-url or set GRAPE_DATABASE_URL (or DATABASE_URL)")
	}
	pool, err := store.OpenAs(ctx, url, cliActor())
	if err != nil {
		return nil, nil, err
	}
	return store.New(pool), pool, nil
}

// withStore connects to the control plane, runs f, and disconnects: what
// every command that reads or changes the control plane does.
func withStore(ctx context.Context, url string, f func(st *store.Store) error) error {
	st, pool, err := openStore(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	return f(st)
}

// whoFlag registers --as: who a person-initiated change is recorded as.
func whoFlag(fs *flag.FlagSet, who *string) {
	fs.StringVar(who, "as", defaultWho(), "who this request is recorded as")
}

// cliActor is who the audit trail records for this process's changes.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return "cli:" + name
}

func defaultWho() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		return name + "@" + h
	}
	return name
}

func parseDeploymentID(args []string) (uuid.UUID, error) {
	if len(args) != 1 {
		return uuid.Nil, usagef("want exactly one deployment id")
	}
	id, err := uuid.Parse(args[0])
	if err != nil {
		return uuid.Nil, usagef("deployment id %q is not a UUID", args[0])
	}
	return id, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readSpec reads an intent file ("-" for stdin), refusing anything that is
// not a JSON object before it goes anywhere.
func readSpec(path string, stdin io.Reader) ([]byte, error) {
	if path == "" {
		return nil, usagef("-f FILE is required (the intent JSON; - for stdin)")
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, maxSpecBytes+1))
	} else {
		var f *os.File
		f, err = os.Open(path)
		if err == nil {
			b, err = io.ReadAll(io.LimitReader(f, maxSpecBytes+1))
			f.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading intent %s: %w", path, err)
	}
	if len(b) > maxSpecBytes {
		return nil, fmt.Errorf("intent %s is larger than %d bytes: an intent is a small JSON object of module inputs", path, maxSpecBytes)
	}
	return b, nil
}

const maxSpecBytes = 1 << 20

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// listCommand is the shape every plain list command shares: --cluster
// (required, or else narrowing a list of every cluster), --json, and a
// table. Only what it loads and how a row reads differ.
type listCommand[T any] struct {
	name, summary   string
	clusterRequired bool
	load            func(st *store.Store, ctx context.Context, cluster string) ([]T, error) // a method expression
	header          []string
	row             func(T) []string
}

// registerList registers a list command.
func registerList[T any](l listCommand[T]) {
	clusterHelp := "cluster id (default: every cluster)"
	if l.clusterRequired {
		clusterHelp = "cluster id"
	}
	register(&command{
		name:    l.name,
		summary: l.summary,
		flags: func(fs *flag.FlagSet) runFunc {
			var db, cluster string
			var asJSON bool
			dbFlag(fs, &db)
			fs.StringVar(&cluster, "cluster", "", clusterHelp)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 0 {
					return usagef("%s takes no arguments", l.name)
				}
				if l.clusterRequired && cluster == "" {
					return usagef("--cluster is required")
				}
				return withStore(ctx, db, func(st *store.Store) error {
					items, err := l.load(st, ctx, cluster)
					if err != nil {
						return err
					}
					if asJSON {
						if items == nil {
							items = []T{} // [] for a script, not null
						}
						return writeJSON(cio.stdout, items)
					}
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, strings.Join(l.header, "\t"))
					for _, it := range items {
						fmt.Fprintln(tw, strings.Join(l.row(it), "\t"))
					}
					return tw.Flush()
				})
			}
		},
	})
}
