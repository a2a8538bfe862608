package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// Helpers of the fault and bad-input suites: starting agents on a given data
// dir, reading the agents' own (JSON) logs, and finding the processes a
// killed agent left behind.

// newFaultEnv is newEnv for the fault and bad-input suites. Their tests run
// several agents at once, so each agent serves /metrics on a port of its own
// choosing (GRAPE_METRICS_LISTEN; a binary without --metrics-listen ignores
// the variable) instead of the fixed default, which the second would fail to bind.
func newFaultEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := newEnv(t, o)
	e.agentEnv["GRAPE_METRICS_LISTEN"] = "127.0.0.1:0"
	return e
}

// startAgentAt starts `grape agent` with a fixed data dir, so a restarted
// agent finds its workspace, run dirs and local state again, as a systemd
// restart would.
func (e *env) startAgentAt(id, dataDir string, args ...string) *agent {
	e.t.Helper()
	a := e.startAgent(id, append([]string{"--data-dir", dataDir}, args...)...)
	a.dataDir = dataDir
	return a
}

// waitLog waits until the agent's own log has a line containing substr.
func (a *agent) waitLog(t *testing.T, substr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(a.output(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("agent log has no %q after %s:\n%s", substr, within, a.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive reports whether the agent process is still running.
func (a *agent) alive() bool {
	select {
	case err := <-a.done:
		a.done <- err // keep it for stop/kill
		return false
	default:
		return true
	}
}

// records returns the agent's JSON log records whose msg is msg.
func (a *agent) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(a.output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // not a JSON record (a panic would be plain text)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// proc is a process found under a directory.
type proc struct {
	pid  int
	comm string
	cwd  string
}

func (p proc) String() string { return fmt.Sprintf("%d %s (cwd %s)", p.pid, p.comm, p.cwd) }

// procsUnder lists the live processes whose working directory is dir or
// inside it: terraform and its providers run in the run dir.
func procsUnder(dir string) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != dir && !strings.HasPrefix(cwd, dir+"/") {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ..."; a zombie is already dead.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < 0 || end+2 >= len(s) || s[end+2] == 'Z' {
			continue
		}
		out = append(out, proc{pid: pid, comm: s[open+1 : end], cwd: cwd})
	}
	return out
}

// waitProcs waits until a process whose name starts with prefix runs under dir.
func waitProcs(t *testing.T, dir, prefix string, within time.Duration) []proc {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var found []proc
		for _, p := range procsUnder(dir) {
			if strings.HasPrefix(p.comm, prefix) {
				found = append(found, p)
			}
		}
		if len(found) > 0 {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s process under %s after %s", prefix, dir, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireNoProcsUnder waits up to within for every process under dir to be
// gone. Leftovers are listed, then killed (they are this test's: started by
// its agent) so they do not outlive the test.
func requireNoProcsUnder(t *testing.T, dir string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := procsUnder(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
			t.Fatalf("processes still running in the dead agent's data dir %s %s after it was killed: %v", dir, within, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countLines counts the log lines that contain substr.
func countLines(lines []store.LogLine, substr string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l.Line, substr) {
			n++
		}
	}
	return n
}

// commitsOf lists the audit repository's commits on main whose
// Grape-Deployment trailer is id, newest first.
func (e *env) commitsOf(id uuid.UUID) []string {
	e.t.Helper()
	out, err := gitOutputAllowEmpty(e, "log", "--format=%H", "--grep", "Grape-Deployment: "+id.String(), "main")
	require.NoError(e.t, err)
	return strings.Fields(out)
}

// gitOutputAllowEmpty runs git on the audit repository; a missing main
// branch (an empty repository) gives "".
func gitOutputAllowEmpty(e *env, args ...string) (string, error) {
	if _, err := os.Stat(filepath.Join(e.repoDir, "refs", "heads", "main")); err != nil {
		if out := e.git("for-each-ref", "refs/heads/main"); out == "" {
			return "", nil
		}
	}
	return e.git(args...), nil
}

// elapsed is for the per-test timing lines the suite reports.
func elapsed(t *testing.T, start time.Time) {
	t.Logf("%s took %s", t.Name(), time.Since(start).Round(100*time.Millisecond))
}

// awsObject reads an S3 object from moto.
func (e *env) awsObject(bucket, key string) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), "object")
	e.aws("s3api", "get-object", "--bucket", bucket, "--key", key, path)
	b, err := os.ReadFile(path)
	require.NoError(e.t, err)
	return string(b)
}

// requireUnlocked checks that no process holds a write lock on the file, the
// way terraform's local backend locks its state (fcntl F_SETLK): if our own
// lock attempt succeeds, nobody else holds one.
func requireUnlocked(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	require.NoError(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk), "%s is still locked", path)
	lk.Type = syscall.F_UNLCK
	require.NoError(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk))
}
