package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localenv"
	"github.com/grapehq/grape/store"
)

// e2eParallel is how many e2e tests run at once unless -parallel says
// otherwise. go test's default is GOMAXPROCS (2 here), but most of these tests
// wait (for agents' polls, approval timeouts, backoffs, a restarted server)
// more than they compute: in a CI run at the default, the machine's CPUs sat
// about 40% idle while the e2e package set the run's length. At 4, the
// package alone took 13 min with the CPUs 73% busy; at 2, 24 min (both on
// a machine loaded by other work).
const e2eParallel = "4"

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		if err := flag.Set("test.parallel", e2eParallel); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: setting -parallel:", err)
			os.Exit(2)
		}
	}
	testsupport.Main(m)
}

const region = "eu-central-1"

// env is one test's world: a database, moto, a git server with the audit
// repository, and the grape binary to run agents with.
type env struct {
	t       testing.TB
	ctx     context.Context
	dbURL   string
	pool    *pgxpool.Pool
	st      *store.Store
	pg      *localenv.Postgres // set when the test owns its server (fault tests)
	moto    *localenv.Moto
	gitSrv  *testsupport.GitServer
	repo    string // the audit repository's HTTP URL
	repoDir string // its bare repository on disk
	cluster string
	bin     string
	// agentEnv is added to every agent process's environment.
	agentEnv map[string]string
	agents   []*agent
}

type envOptions struct {
	// ownPostgres gives the test a private server it may restart.
	ownPostgres bool
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, bin: testsupport.GrapeBinary(t), cluster: "e2e", agentEnv: map[string]string{}}
	// No deadline of its own: parallel tests (and TestBadInput's parallel
	// cases) may wait for a slot most of the suite's length, and a fixed
	// deadline from newEnv expired before they ran on a loaded machine. Every
	// wait below has its own bound; go test -timeout catches a hang with a
	// stack dump.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e.ctx = ctx
	if o.ownPostgres {
		e.pg = testsupport.StartPostgres(t)
		e.dbURL = testsupport.MigratedDatabaseOn(t, e.pg)
	} else {
		e.dbURL = testsupport.DatabaseURL(t)
	}
	e.pool = testsupport.Pool(t, e.dbURL)
	e.st = store.New(e.pool)
	e.moto = testsupport.Moto(t)
	e.gitSrv = testsupport.StartGitServer(t)
	e.gitSrv.CreateRepo(t, "audit.git")
	e.repo = e.gitSrv.HTTPURL("audit.git")
	e.repoDir = e.gitSrv.RepoPath("audit.git")
	_, err := e.st.CreateCluster(ctx, e.cluster, "")
	require.NoError(t, err)
	// One test user both requests and approves (four eyes is tested in store).
	require.NoError(t, e.st.SetFourEyes(ctx, e.cluster, false))
	return e
}

// restartPostgres, stopPostgres and startPostgres drive the test's private
// server. The harness's own pool still holds connections the server killed
// (57P01), so it is reset once the server is back: the agent's handling of an
// outage is what the fault tests examine, not the harness's.
func (e *env) restartPostgres() {
	e.t.Helper()
	require.NoError(e.t, e.pg.Restart(e.ctx))
	e.pool.Reset()
}

func (e *env) stopPostgres() {
	e.t.Helper()
	require.NoError(e.t, e.pg.Stop(e.ctx))
	e.pool.Reset()
}

func (e *env) startPostgres() {
	e.t.Helper()
	require.NoError(e.t, e.pg.Start(e.ctx))
	e.pool.Reset()
}

// config stores an intent (validated by the CLI, as a person would).
func (e *env) config(name, intent string, extra ...string) store.Config {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), name+".json")
	require.NoError(e.t, os.WriteFile(path, []byte(intent), 0o644))
	args := append([]string{"config", "apply", "--cluster", e.cluster, "--name", name, "-f", path}, extra...)
	e.grape(args...)
	c, err := e.st.GetConfig(e.ctx, e.cluster, name)
	require.NoError(e.t, err)
	return c
}

// grape runs a CLI command and returns its stdout; it must succeed.
func (e *env) grape(args ...string) string {
	e.t.Helper()
	out, errOut, err := e.grapeResult(args...)
	require.NoError(e.t, err, "grape %v: %s", args, errOut)
	return strings.TrimSpace(out)
}

func (e *env) grapeResult(args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(e.ctx, e.bin, args...)
	cmd.Env = append(os.Environ(), "GRAPE_DATABASE_URL="+e.dbURL, "GRAPE_AS=e2e-test")
	var o, eb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &eb
	err = cmd.Run()
	return o.String(), eb.String(), err
}

// agent is a running `grape agent` process.
type agent struct {
	cmd     *exec.Cmd
	dataDir string
	log     *bytes.Buffer
	mu      *sync.Mutex
	done    chan error
	exited  bool
	killed  bool // stopped on purpose (kill, stop): not a failure
}

// startAgent starts `grape agent` for the test's cluster, talking to moto and
// pushing to the test's git server. It is stopped (SIGTERM) at test end.
func (e *env) startAgent(id string, args ...string) *agent {
	e.t.Helper()
	dataDir := filepath.Join(e.t.TempDir(), id)
	base := []string{"agent", "--cluster", e.cluster, "--agent-id", id, "--data-dir", dataDir,
		"--workspace-url", e.repo, "--provider-mirror", testsupport.ProviderMirror,
		"--poll-interval", "200ms", "--lease", "10s", "--heartbeat-interval", "1s",
		"--drift-schedule", "off", "--log-format", "json", "--log-level", "debug", "--metrics-listen", ""}
	return e.startAgentArgs(dataDir, append(base, args...)...)
}

// agentEnviron is the environment of an agent process: the database, the
// git server's credentials, moto, and the test's additions.
func (e *env) agentEnviron() []string {
	envv := append(os.Environ(),
		"GRAPE_DATABASE_URL="+e.dbURL,
		"GRAPE_GIT_USERNAME="+e.gitSrv.Username,
		"GRAPE_GIT_PASSWORD="+e.gitSrv.Password,
	)
	for k, v := range e.moto.Env(region) {
		envv = append(envv, k+"="+v)
	}
	for k, v := range e.agentEnv {
		envv = append(envv, k+"="+v)
	}
	return envv
}

func (e *env) startAgentArgs(dataDir string, args ...string) *agent {
	e.t.Helper()
	cmd := exec.Command(e.bin, args...)
	cmd.Env = e.agentEnviron()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a := &agent{cmd: cmd, dataDir: dataDir, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	pr, pw, err := os.Pipe()
	require.NoError(e.t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	require.NoError(e.t, cmd.Start())
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			a.mu.Lock()
			a.log.Write(sc.Bytes())
			a.log.WriteByte('\n')
			a.mu.Unlock()
		}
	}()
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.exited = true
		a.mu.Unlock()
		a.done <- err
	}()
	e.agents = append(e.agents, a)
	e.t.Cleanup(func() {
		a.stop(e.t)
		if e.t.Failed() {
			e.t.Logf("agent %s log:\n%s", dataDir, a.output())
		}
	})
	return a
}

func (a *agent) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

// stop sends SIGTERM (drain) and waits; it kills the process group after 60s.
func (a *agent) stop(t testing.TB) {
	a.mu.Lock()
	gone := a.exited
	a.killed = true
	a.mu.Unlock()
	if gone {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(60 * time.Second):
		t.Logf("agent (pid %d) did not drain within 60s of SIGTERM; killing its process group", a.cmd.Process.Pid)
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

// kill is kill -9 of the agent process (not its terraform children, which
// die with it through Pdeathsig, as they would when a machine dies).
func (a *agent) kill() {
	a.mu.Lock()
	a.killed = true
	a.mu.Unlock()
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

// requireAgentsAlive fails at once, with its output, when an agent process
// died that the test did not stop: waiting longer would only time out.
func (e *env) requireAgentsAlive() {
	e.t.Helper()
	for _, a := range e.agents {
		a.mu.Lock()
		died := a.exited && !a.killed
		a.mu.Unlock()
		if died {
			e.t.Fatalf("agent process %s exited unexpectedly:\n%s", a.dataDir, a.output())
		}
	}
}

func (e *env) deploy(c store.Config, action store.Action) store.Deployment {
	e.t.Helper()
	d, err := e.st.Enqueue(e.ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: action, RequestedBy: "e2e"})
	require.NoError(e.t, err)
	return d
}

// slack stretches every wait bound of the harness. The bounds only catch a
// run that will never get there; on a loaded 2-core machine a plan that takes
// 6 s alone took 157 s (load 15, an e2e run beside it), and a bound that
// passes a working run is a flaky test, not a finding. Waits return as soon
// as the event happens, so this costs passing tests nothing.
const slack = 3

// wait polls until the deployment reaches one of the statuses.
func (e *env) wait(id uuid.UUID, within time.Duration, want ...store.Status) store.Deployment {
	e.t.Helper()
	deadline := time.Now().Add(within * slack)
	for {
		d, err := e.st.GetDeployment(e.ctx, id)
		require.NoError(e.t, err)
		for _, w := range want {
			if d.Status == w {
				return d
			}
		}
		if d.Status.Final() || time.Now().After(deadline) {
			e.t.Fatalf("deployment %s is %s (phase %s, error %q); want %v\nlog:\n%s", id, d.Status, d.PhaseName(), deref(d.Error), want, e.logText(id))
		}
		e.requireAgentsAlive()
		time.Sleep(200 * time.Millisecond)
	}
}

// waitPhase polls until the deployment has reached phase p.
func (e *env) waitPhase(id uuid.UUID, p store.Phase, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within * slack)
	for {
		d, err := e.st.GetDeployment(e.ctx, id)
		require.NoError(e.t, err)
		if d.PhaseName() == p {
			return
		}
		if d.Status.Final() || time.Now().After(deadline) {
			e.t.Fatalf("deployment %s never reached phase %s (now %s, %s)\nlog:\n%s", id, p, d.PhaseName(), d.Status, e.logText(id))
		}
		e.requireAgentsAlive()
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLogLine waits until a line of the deployment's log contains substr,
// for tests that must act while terraform is doing something (not merely in
// a phase, which may have just begun or be about to end).
func (e *env) waitLogLine(id uuid.UUID, substr string, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within * slack)
	var after int64 // read each line once, not the whole log every poll
	for lastLook := false; ; {
		lines, err := e.st.ReadLogs(e.ctx, id, after, 5000)
		require.NoError(e.t, err)
		for _, l := range lines {
			if strings.Contains(l.Line, substr) {
				return
			}
			after = l.Seq
		}
		if len(lines) == 5000 {
			continue
		}
		if lastLook {
			e.t.Fatalf("deployment %s ended or timed out and never logged %q\nlog:\n%s", id, substr, e.logText(id))
		}
		d, err := e.st.GetDeployment(e.ctx, id)
		require.NoError(e.t, err)
		// Every line is stored before the final status, but possibly
		// after the read above: read once more before giving up.
		if lastLook = d.Status.Final() || time.Now().After(deadline); !lastLook {
			e.requireAgentsAlive()
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (e *env) logs(id uuid.UUID) []store.LogLine {
	e.t.Helper()
	var out []store.LogLine
	var after int64
	for {
		lines, err := e.st.ReadLogs(e.ctx, id, after, 5000)
		require.NoError(e.t, err)
		out = append(out, lines...)
		if len(lines) < 5000 {
			return out
		}
		after = lines[len(lines)-1].Seq
	}
}

func (e *env) logText(id uuid.UUID) string {
	var b strings.Builder
	lines, err := e.st.ReadLogs(context.WithoutCancel(e.ctx), id, 0, 100000)
	if err != nil {
		return err.Error()
	}
	for _, l := range lines {
		fmt.Fprintf(&b, "%6d %-6s %s\n", l.Seq, l.Stream, l.Line)
	}
	return b.String()
}

// requireGapless checks seq runs 1..n without a hole or a repeat.
func requireGapless(t testing.TB, lines []store.LogLine) {
	t.Helper()
	for i, l := range lines {
		require.Equal(t, int64(i+1), l.Seq, "seq must be gapless")
	}
}

// aws runs the AWS CLI against moto (out-of-band changes, bucket set-up).
func (e *env) aws(args ...string) string {
	e.t.Helper()
	cmd := exec.CommandContext(e.ctx, "aws", append([]string{"--endpoint-url", e.moto.URL, "--region", region, "--output", "json"}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range e.moto.Env(region) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(e.t, err, "aws %v (the awscli is needed for out-of-band changes): %s", args, out)
	return string(out)
}

// git runs the git CLI on the audit repository, as a reviewer would.
func (e *env) git(args ...string) string {
	e.t.Helper()
	return testsupport.RunGit(e.t, e.repoDir, args...)
}

// fsck runs git fsck --strict on the audit repository.
func (e *env) fsck() {
	e.t.Helper()
	fsck(e.t, e.repoDir)
}

// fsck runs git fsck --strict on the repository in dir. fsck lists the
// objects before it reads the refs, so a push that lands in between (an
// agent pushes a deployment's git note just after its outcome is recorded,
// when a test looks) makes its new objects look missing though nothing is
// wrong. A failure therefore counts only when no ref moved while fsck ran;
// otherwise fsck runs again.
func fsck(t testing.TB, dir string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		before := testsupport.RunGit(t, dir, "for-each-ref")
		_, err := testsupport.GitOutput(context.Background(), dir, "fsck", "--strict")
		if err == nil {
			return
		}
		if after := testsupport.RunGit(t, dir, "for-each-ref"); after == before || attempt == 5 {
			t.Fatalf("%v", err)
		}
		t.Logf("a ref moved while git fsck ran in %s; running it again (%v)", dir, err)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

func mustUUID(s string) uuid.UUID { return uuid.MustParse(s) }
