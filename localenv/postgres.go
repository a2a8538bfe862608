// Package localenv starts the services Grape needs on one machine: a private
// PostgreSQL cluster built from the installed server binaries and the moto AWS
// emulator. `grape dev` uses it for the local default and test support uses it
// for throwaway servers, so both run exactly the same start-up code.
package localenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PostgresOptions say where and how to run a private PostgreSQL cluster.
type PostgresOptions struct {
	// Dir holds the cluster: Dir/data (PGDATA), Dir/postgres.log and
	// Dir/superuser-password. An initialised Dir is reused, which is what
	// makes `grape dev` restartable.
	Dir string
	// Port on 127.0.0.1; 0 picks a free one (kept in the cluster's config).
	Port int
	// NoFsync trades durability for speed; only for throwaway test clusters.
	NoFsync bool
	// MaxConnections defaults to 200: tests open many pools at once.
	MaxConnections int
}

// Postgres is a running private cluster.
type Postgres struct {
	Dir      string
	DataDir  string
	Port     int
	Password string
	bindir   string
	owner    *syscall.Credential // nil unless we are root and must drop to "postgres"
	// reservation holds Port between runs of the server (see Close).
	reservation *PortReservation
}

// SuperuserURL is a connection URL for the cluster's superuser to database db.
func (p *Postgres) SuperuserURL(db string) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword("postgres", p.Password),
		Host:   net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)),
		Path:   "/" + db,
	}
	q := url.Values{}
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// PostgresBinDir finds the installed server binaries: pg_config --bindir first,
// then the usual Debian location, then PATH.
func PostgresBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if fileExists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Sort(sort.Reverse(sort.StringSlice(matches)))
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package (Debian: apt-get install postgresql) or pass --database-url")
}

// StartPostgres initialises the cluster in opts.Dir if needed and starts it.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("localenv: PostgresOptions.Dir is required")
	}
	bindir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving postgres dir %s: %w", opts.Dir, err)
	}
	p := &Postgres{Dir: dir, DataDir: filepath.Join(dir, "data"), bindir: bindir}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root; run it as the postgres system user.
		cred, err := lookupCredential("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user: %w", err)
		}
		p.owner = cred
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating postgres dir: %w", err)
	}
	if err := p.checkReachable(); err != nil {
		return nil, err
	}
	if !fileExists(filepath.Join(p.DataDir, "PG_VERSION")) {
		if err := p.initdb(ctx, opts); err != nil {
			p.Close()
			return nil, err
		}
	} else {
		pw, err := os.ReadFile(filepath.Join(dir, "superuser-password"))
		if err != nil {
			return nil, fmt.Errorf("reading superuser password of existing cluster in %s: %w", dir, err)
		}
		p.Password = strings.TrimSpace(string(pw))
		port, err := readPort(filepath.Join(p.DataDir, "postgresql.auto.conf"))
		if err != nil {
			return nil, err
		}
		if p.reservation, err = reservePort(port); err != nil {
			// Someone listens there: a stale cluster of ours may still run
			// (e.g. after a crash of `grape dev`); stop it and look again.
			_ = p.pgctl(ctx, "stop", "-m", "fast", "-w", "-t", "30")
			p.reservation, err = reservePort(port)
		}
		if err != nil {
			if p.reservation, err = ReservePort(); err != nil {
				return nil, err
			}
			if err := p.writeAutoConf(opts, p.reservation.Port); err != nil {
				p.Close()
				return nil, err
			}
		}
		p.Port = p.reservation.Port
	}
	if err := p.Start(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close gives back the port the cluster was started on, which stays reserved
// while the cluster is stopped and started again (see PortReservation). Call
// it after Stop, once this process will not start the cluster again.
func (p *Postgres) Close() {
	_ = p.reservation.Close()
}

// Start starts a stopped cluster and waits until it accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	// A postmaster.pid left by a killed server makes pg_ctl refuse to start.
	if err := p.pgctl(ctx, "start", "-w", "-t", "60", "-l", filepath.Join(p.Dir, "postgres.log")); err != nil {
		return err
	}
	return p.waitReady(ctx)
}

// Stop shuts the cluster down (fast mode: running transactions are rolled back).
func (p *Postgres) Stop(ctx context.Context) error {
	return p.pgctl(ctx, "stop", "-m", "fast", "-w", "-t", "60")
}

// Restart is `pg_ctl restart -m fast`: every connection is dropped.
func (p *Postgres) Restart(ctx context.Context) error {
	if err := p.pgctl(ctx, "restart", "-m", "fast", "-w", "-t", "60", "-l", filepath.Join(p.Dir, "postgres.log")); err != nil {
		return err
	}
	return p.waitReady(ctx)
}

func (p *Postgres) initdb(ctx context.Context, opts PostgresOptions) error {
	p.Password = randomHex(16)
	pwfile := filepath.Join(p.Dir, "superuser-password")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing superuser password: %w", err)
	}
	// initdb reads the password file as the postgres user: hand it a copy it may read.
	tmpPw := filepath.Join(p.Dir, ".initdb-pw")
	if err := os.WriteFile(tmpPw, []byte(p.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing initdb password file: %w", err)
	}
	defer os.Remove(tmpPw)
	if err := p.chown(tmpPw); err != nil {
		return err
	}
	if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating PGDATA: %w", err)
	}
	if err := p.chown(p.DataDir); err != nil {
		return err
	}
	args := []string{"-D", p.DataDir, "-U", "postgres", "--pwfile", tmpPw,
		"--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8"}
	if opts.NoFsync {
		args = append(args, "--no-sync")
	}
	if out, err := p.command(ctx, "initdb", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("initdb in %s: %w: %s", p.DataDir, err, bytes.TrimSpace(out))
	}
	port := opts.Port
	if port == 0 {
		var err error
		if p.reservation, err = ReservePort(); err != nil {
			return err
		}
		port = p.reservation.Port
	} else {
		// A port the caller chose is reserved when it is free; when it is
		// not, the server's own error says so at start.
		p.reservation, _ = reservePort(port)
	}
	p.Port = port
	// The log file lives beside PGDATA and must be writable by the server.
	logPath := filepath.Join(p.Dir, "postgres.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("creating postgres log: %w", err)
	}
	f.Close()
	if err := p.chown(logPath); err != nil {
		return err
	}
	return p.writeAutoConf(opts, port)
}

// writeAutoConf keeps our settings in postgresql.auto.conf, so `pg_ctl restart`
// (a fault the tests inject) comes back on the same port with the same settings.
func (p *Postgres) writeAutoConf(opts PostgresOptions, port int) error {
	maxConn := opts.MaxConnections
	if maxConn == 0 {
		maxConn = 200
	}
	lines := []string{
		"# written by grape localenv",
		fmt.Sprintf("port = %d", port),
		"listen_addresses = '127.0.0.1'",
		// No unix socket: its path length limit bites in deep temp dirs, and
		// every client here connects over loopback TCP anyway.
		"unix_socket_directories = ''",
		fmt.Sprintf("max_connections = %d", maxConn),
	}
	if opts.NoFsync {
		lines = append(lines, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	path := filepath.Join(p.DataDir, "postgresql.auto.conf")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return p.chown(path)
}

func readPort(autoConf string) (int, error) {
	b, err := os.ReadFile(autoConf)
	if err != nil {
		return 0, fmt.Errorf("reading port of existing cluster: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == "port" {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no port in %s", autoConf)
}

func (p *Postgres) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres on %s not accepting connections after 30s: %w (see %s)", addr, err, filepath.Join(p.Dir, "postgres.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *Postgres) pgctl(ctx context.Context, args ...string) error {
	full := append([]string{"-D", p.DataDir}, args...)
	cmd := p.command(ctx, "pg_ctl", full...)
	// pg_ctl start leaves the server running with our stdout if we pass one;
	// the server logs to -l instead, so discard what pg_ctl itself says
	// unless it fails.
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", args[0], err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bindir, name), args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	// Own process group: a Ctrl-C in the terminal goes to Grape, which stops
	// the server in order, instead of straight to the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.owner != nil {
		cmd.SysProcAttr.Credential = p.owner
		cmd.Env = append(cmd.Env, "HOME="+p.Dir, "USER=postgres")
	}
	return cmd
}

func (p *Postgres) chown(path string) error {
	if p.owner == nil {
		return nil
	}
	if err := os.Chown(path, int(p.owner.Uid), int(p.owner.Gid)); err != nil {
		return fmt.Errorf("handing %s to the postgres user: %w", path, err)
	}
	return nil
}

// checkReachable fails early, with the fix, when the postgres user cannot
// traverse to the cluster dir (a data dir under /root, say).
func (p *Postgres) checkReachable() error {
	if p.owner == nil {
		return nil
	}
	for d := p.Dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("checking %s: %w", d, err)
		}
		if st.Mode().Perm()&0o001 == 0 && d != p.Dir {
			sys, _ := st.Sys().(*syscall.Stat_t)
			if sys == nil || (sys.Uid != p.owner.Uid && (sys.Gid != p.owner.Gid || st.Mode().Perm()&0o010 == 0)) {
				return fmt.Errorf("PostgreSQL runs as the postgres user, which cannot enter %s (mode %s): choose a data dir it can reach, e.g. under /var/lib or /tmp", d, st.Mode().Perm())
			}
		}
		if d == "/" {
			return nil
		}
	}
}

func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("looking up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of %q: %w", name, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
