package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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
func (a *agent) waitLog(t testing.TB, substr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within * slack)
	for !strings.Contains(a.output(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("agent log has no %q after %s:\n%s", substr, within*slack, a.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive reports whether the agent process is still running.
func (a *agent) alive() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.exited
}

// records returns the agent's JSON log records whose msg is msg.
func (a *agent) records(t testing.TB, msg string) []map[string]any {
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

// hasProc reports whether a process whose name starts with prefix runs
// under dir.
func hasProc(dir, prefix string) bool {
	for _, p := range procsUnder(dir) {
		if strings.HasPrefix(p.comm, prefix) {
			return true
		}
	}
	return false
}

// requireNoProcsUnder waits up to within (times slack) for every process under dir to be
// gone. Leftovers are listed, then killed (they are this test's: started by
// its agent) so they do not outlive the test.
func requireNoProcsUnder(t testing.TB, dir string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within * slack)
	for {
		left := procsUnder(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
			t.Fatalf("processes still running in the dead agent's data dir %s %s after it was killed: %v", dir, within*slack, left)
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
	return strings.Fields(e.git("log", "--format=%H", "--grep", "Grape-Deployment: "+id.String(), "main"))
}

// elapsed is for the per-test timing lines the suite reports.
func elapsed(t testing.TB, start time.Time) {
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
func requireUnlocked(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	require.NoError(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk), "%s is still locked", path)
	lk.Type = syscall.F_UNLCK
	require.NoError(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk))
}

// hostOf returns the host:port of a URL.
func hostOf(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

// mountTmpfs mounts a tmpfs of the given size (e.g. "8m") on dir until the
// test ends (after the agents, which are stopped by cleanups registered
// later). Mounting needs root (CAP_SYS_ADMIN), which CI and the project's
// machines have; elsewhere the test is skipped, saying why.
func mountTmpfs(t testing.TB, dir, size string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	if os.Geteuid() != 0 {
		t.Skipf("needs root to mount a %s tmpfs on %s (a full disk cannot be made otherwise without affecting the machine)", size, dir)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mounting a %s tmpfs on %s (needs CAP_SYS_ADMIN): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// fillDisk writes a file into dir until the filesystem is full and returns
// a func that deletes it again.
func fillDisk(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	chunk := make([]byte, 64<<10)
	for {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, syscall.ENOSPC)
	// The last pages: small writes fill what a 64 KiB write could not.
	for err == nil || errors.Is(err, syscall.ENOSPC) {
		if _, err = f.Write(chunk[:512]); err != nil {
			break
		}
	}
	require.NoError(t, f.Close())
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	require.Zero(t, st.Bavail, "%s still has room", dir)
	return func() { require.NoError(t, os.Remove(path)) }
}

// waitObject waits until an S3 object exists in moto. It asks moto over
// plain HTTP: the AWS CLI takes a second a call, too slow to catch a lock
// that lives for a few.
func (e *env) waitObject(bucket, key string, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within * slack)
	for !e.objectExists(bucket, key) {
		if time.Now().After(deadline) {
			e.t.Fatalf("s3://%s/%s did not appear within %s", bucket, key, within*slack)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) objectExists(bucket, key string) bool {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, http.MethodHead, e.moto.URL+"/"+bucket+"/"+key, nil)
	require.NoError(e.t, err)
	// moto refuses anonymous requests but does not check signatures; the
	// credential scope tells it the region.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/"+region+"/s3/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// survivors reports which processes of a killed agent outlive it: terraform
// must die with it (Pdeathsig) within seconds; providers may not.
func survivors(t testing.TB, dataDir string, before []proc) []proc {
	t.Helper()
	killed := time.Now()
	var left []proc
	for time.Since(killed) < 3*time.Second {
		left = procsUnder(dataDir)
		terraform := 0
		for _, p := range left {
			if p.comm == "terraform" {
				terraform++
			}
		}
		if terraform == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range left {
		require.NotEqual(t, "terraform", p.comm, "terraform outlived its agent: %v", left)
	}
	t.Logf("kill -9 of the agent: %d of its %d terraform processes outlived it after %s: %v", len(left), len(before), time.Since(killed).Round(10*time.Millisecond), left)
	return left
}

// requireOrphansKilled restarts a killed agent on its data dir and checks
// that it ends the processes its dead terraform left running, before it does
// anything else.
func (e *env) requireOrphansKilled(dead *agent, left []proc) {
	e.t.Helper()
	a := e.startAgentAt(dead.id(), dead.dataDir)
	a.waitLog(e.t, `"msg":"agent started"`, time.Minute)
	requireNoProcsUnder(e.t, dead.dataDir, 5*time.Second)
	n := len(a.records(e.t, "killed a process a dead agent's terraform left running"))
	e.t.Logf("the restarted agent killed %d leftover processes (%d had been seen right after the kill)", n, len(left))
	a.stop(e.t)
}

// id is the agent's --agent-id.
func (a *agent) id() string {
	for i, arg := range a.cmd.Args {
		if arg == "--agent-id" && i+1 < len(a.cmd.Args) {
			return a.cmd.Args[i+1]
		}
	}
	return ""
}

// countAgentPrefix counts the agent lines that start with prefix.
func countAgentPrefix(lines []store.LogLine, prefix string) int {
	n := 0
	for _, l := range lines {
		if l.Stream == store.StreamAgent && strings.HasPrefix(l.Line, prefix) {
			n++
		}
	}
	return n
}

// holdRuns waits until the run of every deployment in ids has reached a
// point (reached reports it), and stops (SIGSTOP) a run's processes the
// moment it gets there, so the first to arrive cannot finish while the test
// waits for the others. A kill meant to land while several runs are in the
// middle of terraform then does, however loaded the machine is (CI once saw
// a local-state apply finish before the S3 one began). The returned resume
// continues (SIGCONT) what was stopped: call it right after the kill, so that
// what outlives the agent runs on as it would have; terraform itself dies
// stopped or not, since its Pdeathsig is SIGKILL.
func (e *env) holdRuns(a *agent, ids []uuid.UUID, reached func(uuid.UUID) bool, within time.Duration) (resume func()) {
	e.t.Helper()
	var stopped []int
	resume = func() {
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT) // ESRCH: it died with the agent
		}
		stopped = nil
	}
	e.t.Cleanup(resume) // a failed test leaves nothing stopped behind
	held := map[uuid.UUID]bool{}
	deadline := time.Now().Add(within * slack)
	for len(held) < len(ids) {
		for _, id := range ids {
			if held[id] || !reached(id) {
				continue
			}
			pids := stopProcsUnder(a.dataDir + "/runs/" + id.String())
			e.t.Logf("holding deployment %s: stopped %d processes", id, len(pids))
			stopped = append(stopped, pids...)
			d, err := e.st.GetDeployment(e.ctx, id)
			require.NoError(e.t, err)
			require.False(e.t, d.Status.Final(), "deployment %s ended (%s) before it could be held", id, d.Status)
			held[id] = true
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("only %d of %d runs reached the point to hold them at within %s", len(held), len(ids), within*slack)
		}
		e.requireAgentsAlive()
		time.Sleep(50 * time.Millisecond)
	}
	return resume
}

// stopProcsUnder stops every process under dir, again until no new one
// appears: a process forked just before its parent stopped shows up late.
func stopProcsUnder(dir string) []int {
	seen := map[int]bool{}
	var pids []int
	for grew := true; grew; {
		grew = false
		for _, p := range procsUnder(dir) {
			if !seen[p.pid] && syscall.Kill(p.pid, syscall.SIGSTOP) == nil {
				seen[p.pid], grew = true, true
				pids = append(pids, p.pid)
			}
		}
		if grew {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return pids
}

// logged reports whether a line of the deployment's log contains substr.
func (e *env) logged(id uuid.UUID, substr string) bool {
	e.t.Helper()
	return countLines(e.logs(id), substr) > 0
}
