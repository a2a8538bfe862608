package testsupport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/grapehq/grape/localenv"
)

// GitServer serves the bare repositories under Root the ways a customer's git
// server would: over git:// (git daemon, push enabled) and over smart HTTP and
// HTTPS (git http-backend behind net/http/cgi) guarded by HTTP basic auth, and
// over SSH after StartSSH, so tests can push with go-git and then look at the
// result with the git CLI.
type GitServer struct {
	// Root holds the bare repositories, one directory per repository name.
	Root string
	// Username and Password are the only credentials the HTTP(S) endpoints accept.
	Username string
	Password string
	// CAFile is a PEM file with the HTTPS endpoint's self-signed certificate.
	CAFile string

	gitBase   string // git://127.0.0.1:port
	httpBase  string // http://127.0.0.1:port
	httpsBase string // https://127.0.0.1:port

	stopOnce sync.Once
	stops    []func()
}

// Stop shuts the git daemon and the HTTP(S) servers down before the test
// ends, to test what a client sees when its git server goes away. The
// repositories stay on disk.
func (g *GitServer) Stop() {
	g.stopOnce.Do(func() {
		for i := len(g.stops) - 1; i >= 0; i-- {
			g.stops[i]()
		}
	})
}

// StartGitServer starts git daemon and an HTTP(S) git server on loopback for
// this test. Both stop when the test ends. It needs the git CLI, which ships
// git daemon and git http-backend.
func StartGitServer(t testing.TB) *GitServer {
	t.Helper()
	execPath := gitExecPath(t)
	root := t.TempDir()
	logDir := t.TempDir()
	g := &GitServer{Root: root, Username: "reviewer", Password: "s3cret-" + randomSuffix()}

	t.Cleanup(g.Stop)
	stderr, err := os.Create(filepath.Join(logDir, "http-backend.log"))
	if err != nil {
		t.Fatalf("creating http-backend log: %v", err)
	}
	// Stops run in reverse: the log closes after the servers are gone.
	g.stops = append(g.stops, func() { stderr.Close() })
	port, stopDaemon := startGitDaemon(t, root, filepath.Join(logDir, "git-daemon.log"))
	g.stops = append(g.stops, stopDaemon)
	g.gitBase = "git://127.0.0.1:" + strconv.Itoa(port)

	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git-http-backend not found in %s (it ships with the git CLI): %v", execPath, err)
	}
	handler := g.basicAuth(&cgi.Handler{
		Path: backend,
		Root: "/",
		Env: append(gitCLIEnv(),
			"GIT_PROJECT_ROOT="+root,
			"GIT_HTTP_EXPORT_ALL=1",
			// git http-backend only enables receive-pack for an authenticated
			// user; basicAuth has checked the credentials already.
			"REMOTE_USER="+g.Username,
		),
		Stderr: stderr,
	})
	plain := httptest.NewServer(handler)
	g.stops = append(g.stops, plain.Close)
	g.httpBase = plain.URL

	tlsSrv := httptest.NewTLSServer(handler)
	g.stops = append(g.stops, tlsSrv.Close)
	g.httpsBase = tlsSrv.URL
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	g.CAFile = filepath.Join(logDir, "ca.pem")
	if err := os.WriteFile(g.CAFile, caPEM, 0o644); err != nil {
		t.Fatalf("writing CA file: %v", err)
	}
	return g
}

// basicAuth rejects requests without the server's credentials with 401, as a
// real git host does, so tests can check what a wrong token looks like.
func (g *GitServer) basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(g.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(pass), []byte(g.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="grape test git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CreateRepo creates an empty bare repository named name (e.g. "workspace.git")
// whose default branch is main, and returns its path.
func (g *GitServer) CreateRepo(t testing.TB, name string) string {
	t.Helper()
	path := g.RepoPath(name)
	RunGit(t, "", "init", "--quiet", "--bare", "--initial-branch=main", path)
	// Accept pushes over HTTP regardless of REMOTE_USER handling.
	RunGit(t, path, "config", "http.receivepack", "true")
	return path
}

// RepoPath is where repository name lives on disk.
func (g *GitServer) RepoPath(name string) string { return filepath.Join(g.Root, name) }

// GitURL is the git:// URL of repository name (no authentication).
func (g *GitServer) GitURL(name string) string { return g.gitBase + "/" + name }

// HTTPURL is the http:// URL of repository name, without credentials.
func (g *GitServer) HTTPURL(name string) string { return g.httpBase + "/" + name }

// HTTPSURL is the https:// URL of repository name, without credentials; its
// certificate is in CAFile.
func (g *GitServer) HTTPSURL(name string) string { return g.httpsBase + "/" + name }

// Colleague is a person's non-bare clone of a repository, used to push
// commits behind the agent's back the way a teammate would.
type Colleague struct {
	Dir string
	t   testing.TB
}

// CloneAsColleague clones repository name over git:// into a fresh directory.
// An empty repository gives an empty clone on branch main.
func (g *GitServer) CloneAsColleague(t testing.TB, name string) *Colleague {
	t.Helper()
	return NewColleague(t, g.GitURL(name))
}

// NewColleague clones the repository at url (any URL or path git accepts)
// into a fresh directory, on branch main.
func NewColleague(t testing.TB, url string) *Colleague {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "colleague")
	RunGit(t, "", "clone", "--quiet", url, dir)
	RunGit(t, dir, "checkout", "--quiet", "-B", "main")
	return &Colleague{Dir: dir, t: t}
}

// Pull brings the clone up to date with the remote's main, if it has one.
func (c *Colleague) Pull() {
	c.t.Helper()
	if out := RunGit(c.t, c.Dir, "ls-remote", "origin", "refs/heads/main"); out != "" {
		RunGit(c.t, c.Dir, "pull", "--quiet", "--rebase", "origin", "main")
	}
}

// PushAll commits everything in the clone (new, changed and deleted files)
// with subject, pushes it to main and returns the commit's SHA.
func (c *Colleague) PushAll(subject string) string {
	c.t.Helper()
	RunGit(c.t, c.Dir, "add", "--all")
	RunGit(c.t, c.Dir, "commit", "--quiet", "--allow-empty", "-m", subject)
	RunGit(c.t, c.Dir, "push", "--quiet", "origin", "HEAD:refs/heads/main")
	return RunGit(c.t, c.Dir, "rev-parse", "HEAD")
}

// CommitAndPush pulls, writes files (path → content; a nil content deletes
// the path), commits them with subject and pushes to main. It returns the new
// commit's SHA.
func (c *Colleague) CommitAndPush(subject string, files map[string][]byte) string {
	c.t.Helper()
	c.Pull()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(c.Dir, filepath.FromSlash(name))
		if files[name] == nil {
			RunGit(c.t, c.Dir, "rm", "--quiet", "-r", "--", name)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			c.t.Fatalf("colleague: %v", err)
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			c.t.Fatalf("colleague: %v", err)
		}
	}
	return c.PushAll(subject)
}

// RunGit runs the git CLI in dir ("" for the current directory) with a
// configuration isolated from the machine's, and returns its trimmed stdout.
// It fails the test if git fails.
func RunGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := GitOutput(context.Background(), dir, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// GitOutput is RunGit for callers that expect failures: the error carries
// git's stderr, then its stdout.
func GitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return "", fmt.Errorf("git CLI not found on PATH (install git 2.x): %w", err)
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), gitCLIEnv()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		// Some commands report on stdout (git fsck's "missing blob …").
		return "", fmt.Errorf("git %s (in %q): %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()+"\n"+stdout.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// gitCLIEnv keeps the machine's git configuration and any credential helper
// out of test runs and gives commits a stable identity.
func gitCLIEnv() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Colleague",
		"GIT_AUTHOR_EMAIL=colleague@example.com",
		"GIT_COMMITTER_NAME=Colleague",
		"GIT_COMMITTER_EMAIL=colleague@example.com",
	}
}

var (
	execPathOnce sync.Once
	execPath     string
	execPathErr  error
)

func gitExecPath(t testing.TB) string {
	t.Helper()
	execPathOnce.Do(func() {
		execPath, execPathErr = GitOutput(context.Background(), "", "--exec-path")
	})
	if execPathErr != nil {
		t.Fatalf("git CLI needed to serve test repositories: %v", execPathErr)
	}
	return execPath
}

// startGitDaemon runs git daemon on a reserved loopback port and returns the
// port once it accepts connections, with a func that stops it. The port stays
// reserved until the test ends, so a test that stops the daemon sees
// "connection refused", never another test's server. The daemon and the
// children it forks per connection share a process group, which stop
// terminates.
func startGitDaemon(t testing.TB, root, logPath string) (int, func()) {
	t.Helper()
	port := ReservePort(t).Port
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("creating git daemon log: %v", err)
	}
	// --reuseaddr lets the daemon listen on the reserved port.
	cmd := exec.Command("git", "daemon",
		"--export-all", "--enable=receive-pack", "--informative-errors", "--reuseaddr",
		"--base-path="+root, "--listen=127.0.0.1", "--port="+strconv.Itoa(port), root)
	cmd.Env = append(os.Environ(), gitCLIEnv()...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting git daemon (part of the git CLI): %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitForPort(port, exited); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		logFile.Close()
		log, _ := os.ReadFile(logPath)
		t.Fatalf("git daemon did not start: %v\n%s", err, log)
	}
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logFile.Close()
	}
	return port, stop
}

func waitForPort(port int, exited <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("git daemon exited: %w", err)
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("timed out waiting for git daemon to listen")
}

// FreeLoopbackAddr returns a loopback address nobody listens on, for tests of
// an unreachable server. Unlike ReservePort's, no server can take it (see
// localenv.ReserveClosedPort), and it stays reserved until the test ends.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	r, err := localenv.ReserveClosedPort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r.Addr()
}

// ReservePort reserves a loopback port for a server the test starts, stops
// and starts again, until the test ends (see localenv.PortReservation): no
// parallel test can be handed it while the server is down.
func ReservePort(t testing.TB) *localenv.PortReservation {
	t.Helper()
	r, err := localenv.ReservePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// SSHServer serves a GitServer's repositories over SSH, the way GitHub deploy
// keys are used: one authorized client key, a host key the client must know.
type SSHServer struct {
	// KeyFile is the authorized client's private key (OpenSSH format).
	KeyFile string
	// KnownHostsFile lists the server's host key for its address.
	KnownHostsFile string
	// Addr is 127.0.0.1:port.
	Addr string

	root string
}

// URL is the ssh:// URL of repository name.
func (s *SSHServer) URL(name string) string { return "ssh://git@" + s.Addr + "/" + name }

// StartSSH serves the repositories over SSH on a loopback port until the
// test ends. Only git-upload-pack and git-receive-pack run, inside Root.
func (g *GitServer) StartSSH(t testing.TB) *SSHServer {
	t.Helper()
	dir := t.TempDir()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	authorized, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "grape test client")
	if err != nil {
		t.Fatal(err)
	}
	s := &SSHServer{KeyFile: filepath.Join(dir, "id_ed25519"), KnownHostsFile: filepath.Join(dir, "known_hosts"), root: g.Root}
	if err := os.WriteFile(s.KeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening for SSH: %v", err)
	}
	s.Addr = l.Addr().String()
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, hostSigner.PublicKey())
	if err := os.WriteFile(s.KnownHostsFile, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns[c] = true
			connsMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveConn(c, cfg)
				connsMu.Lock()
				delete(conns, c)
				connsMu.Unlock()
			}()
		}
	}()
	stop := func() {
		l.Close()
		connsMu.Lock()
		for c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	}
	g.stops = append(g.stops, stop)
	return s
}

func (s *SSHServer) serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveSession(ch, requests)
		}()
	}
}

// serveSession runs the one git command a client execs, like a git host's
// forced command.
func (s *SSHServer) serveSession(ch ssh.Channel, requests <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	for req := range requests {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" {
				env = append(env, kv.Name+"="+kv.Value)
			}
			_ = req.Reply(true, nil)
		case "exec":
			var cmdline struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmdline); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			cmd, err := s.gitCommand(cmdline.Command)
			if err != nil {
				_ = req.Reply(true, nil)
				fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{128}))
				return
			}
			_ = req.Reply(true, nil)
			cmd.Env = append(append(os.Environ(), gitCLIEnv()...), env...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
			status := uint32(0)
			if err := cmd.Run(); err != nil {
				status = 1
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					status = uint32(exit.ExitCode())
				}
			}
			_ = ch.CloseWrite()
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			return
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// gitCommand parses "git-receive-pack '/ws.git'" into a command confined to
// the server's root.
func (s *SSHServer) gitCommand(line string) (*exec.Cmd, error) {
	verb, arg, ok := strings.Cut(line, " ")
	if !ok || (verb != "git-upload-pack" && verb != "git-receive-pack") {
		return nil, fmt.Errorf("command %q not allowed", line)
	}
	name := strings.Trim(strings.Trim(arg, "'\""), "/")
	full := filepath.Join(s.root, filepath.FromSlash(name))
	if name == "" || strings.Contains(name, "..") || !strings.HasPrefix(full, s.root+string(filepath.Separator)) {
		return nil, fmt.Errorf("repository %q not found", name)
	}
	if _, err := os.Stat(full); err != nil {
		return nil, fmt.Errorf("'%s' does not appear to be a git repository", name)
	}
	return exec.Command("git", strings.TrimPrefix(verb, "git-"), full), nil
}
