package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
)

// TestDev runs `grape dev` the way a person does — the built binary, long
// running, its own PostgreSQL and moto — drives one apply of the sample
// config to success with `grape deploy --follow`, reads the metrics and
// health endpoints, stops it with Ctrl-C (SIGINT) and checks nothing it
// started is left running. A second `grape dev` on the same data dir comes
// up again and still has the deployment.
func TestDev(t *testing.T) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		t.Fatal("moto_server is not on PATH: grape dev's zero-risk default needs it (pip install 'moto[server]')")
	}
	testsupport.TerraformBinary(t)
	bin := testsupport.GrapeBinary(t)
	dataDir := reachableTempDir(t)

	dev := startDev(t, bin, dataDir)
	dbURL := dev.waitFor(t, `GRAPE_DATABASE_URL='([^']+)' grape deploy`)
	metricsURL := dev.waitFor(t, `metrics:\s+(http://\S+)/metrics`)
	motoURL := dev.waitFor(t, `terraform talks to moto on (http://127\.0\.0\.1:\d+)`)
	cfgID := dev.waitFor(t, `config:\s+local/sample \(([0-9a-f-]{36})\)`)
	pgPid := postmasterPid(t, dataDir)
	require.True(t, alive(pgPid), "postgres runs while grape dev does")

	// A person's second terminal: queue and follow.
	out, errOut, err := grapeCmd(t, bin, dbURL, "deploy", "--cluster", "local", "--config", "sample", "--follow")
	require.NoError(t, err, "grape deploy --follow: %s\n%s\ngrape dev:\n%s", out, errOut, dev.stderr())
	depID := strings.SplitN(out, "\n", 2)[0]
	require.Regexp(t, `^[0-9a-f-]{36}$`, depID)
	require.Contains(t, out, "[grape] succeeded")

	// The run changed the counters; /readyz and /healthz say all is well.
	m := scrape(t, metricsURL+"/metrics")
	require.Equal(t, 1.0, m.value(t, "grape_deployments_total", "action", "apply", "status", "succeeded"))
	require.Equal(t, 0.0, m.value(t, "grape_deployments_total", "action", "apply", "status", "failed"))
	for _, phase := range []string{"render", "commit", "checkout", "init", "plan", "apply", "outputs"} {
		require.Equal(t, uint64(1), m.histogramCount(t, "grape_phase_duration_seconds", "phase", phase), "phase %s", phase)
	}
	require.Equal(t, uint64(1), m.histogramCount(t, "grape_pickup_latency_seconds"))
	require.Equal(t, uint64(1), m.histogramCount(t, "grape_deployment_duration_seconds", "action", "apply"))
	require.Greater(t, m.value(t, "grape_log_lines_total"), 20.0, "terraform's output was stored")
	require.GreaterOrEqual(t, m.value(t, "grape_log_batches_total"), 1.0)
	require.Equal(t, 0.0, m.value(t, "grape_log_buffer_lines"))
	require.Equal(t, 0.0, m.value(t, "grape_lease_expiries_total", "decision", "requeued"))
	bi := m.metric(t, "grape_build_info")
	require.Equal(t, 1.0, bi.GetGauge().GetValue())
	labels := map[string]string{}
	for _, l := range bi.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	require.Equal(t, runtime.Version(), labels["go_version"])
	require.True(t, strings.HasPrefix(labels["version"], "dev"), "a build without -ldflags is a dev build: %v", labels)
	require.Eventually(t, func() bool {
		// The run leaves the agent's table just after its outcome is written.
		return scrape(t, metricsURL+"/metrics").value(t, "grape_agent_running_deployments") == 0
	}, 10*time.Second, 50*time.Millisecond)
	code, body := httpGet(t, metricsURL+"/readyz")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, "agent: ok")
	require.Contains(t, body, "database: ok")
	require.Contains(t, body, "listener: ok")
	code, _ = httpGet(t, metricsURL+"/healthz")
	require.Equal(t, 200, code)

	// Every JSON log line about a deployment names its deployment, config
	// and cluster; the line that reports the outcome has all three.
	sawFinished := false
	for _, rec := range dev.jsonLogs(t) {
		if _, ok := rec["deployment_id"]; !ok {
			continue
		}
		require.Contains(t, rec, "config_id", "log line %v", rec)
		require.Contains(t, rec, "cluster_id", "log line %v", rec)
		if rec["msg"] == "deployment finished" && rec["deployment_id"] == depID {
			require.Equal(t, cfgID, rec["config_id"])
			require.Equal(t, "local", rec["cluster_id"])
			require.Equal(t, "succeeded", rec["status"])
			sawFinished = true
		}
	}
	require.True(t, sawFinished, "no 'deployment finished' line in:\n%s", dev.stderr())

	// Ctrl-C: everything it started stops, and it exits 0.
	dev.interrupt(t)
	// pg_ctl stop returns when the pid file is gone, a moment before the
	// postmaster has exited.
	require.Eventually(t, func() bool { return !alive(pgPid) }, 10*time.Second, 20*time.Millisecond,
		"postgres (pid %d) outlived grape dev", pgPid)
	require.NoFileExists(t, filepath.Join(dataDir, "postgres", "data", "postmaster.pid"), "postgres shut down cleanly")
	require.Empty(t, processesWith(motoURL[strings.LastIndex(motoURL, ":")+1:], "moto_server"), "moto outlived grape dev")
	require.Empty(t, processesWith(filepath.Join(dataDir, "postgres")), "a process still uses the data dir")
	_, err = http.Get(metricsURL + "/healthz")
	require.Error(t, err, "the metrics server stopped")

	// The data dir is reusable: the same database, with the deployment.
	dev = startDev(t, bin, dataDir)
	dbURL = dev.waitFor(t, `GRAPE_DATABASE_URL='([^']+)' grape deploy`)
	out, errOut, err = grapeCmd(t, bin, dbURL, "status", depID)
	require.NoError(t, err, errOut)
	require.Regexp(t, `status:\s+succeeded`, out)
	require.Regexp(t, `commit:\s+[0-9a-f]{40}`, out)
	dev.interrupt(t)
}

// devProcess is a running `grape dev`.
type devProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited; then err is set
	err    error

	mu     sync.Mutex
	out    bytes.Buffer // stdout: what a person reads
	errOut bytes.Buffer // stderr: the JSON log
	grew   chan struct{}
}

func startDev(t *testing.T, bin, dataDir string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data-dir", dataDir, "--listen", "", "--metrics-listen", "127.0.0.1:0",
		"--aws", "moto", "--provider-mirror", testsupport.ProviderMirror, "--drift-schedule", "off",
		"--poll-interval", "200ms", "--log-format", "json")
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d := &devProcess{cmd: cmd, exited: make(chan struct{}), grew: make(chan struct{}, 1)}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var copying sync.WaitGroup
	for _, p := range []struct {
		r   io.Reader
		buf *bytes.Buffer
	}{{stdout, &d.out}, {stderr, &d.errOut}} {
		copying.Add(1)
		go func() {
			defer copying.Done()
			sc := bufio.NewScanner(p.r)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				d.mu.Lock()
				p.buf.Write(sc.Bytes())
				p.buf.WriteByte('\n')
				d.mu.Unlock()
				select {
				case d.grew <- struct{}{}:
				default:
				}
			}
		}()
	}
	go func() {
		copying.Wait() // Wait closes the pipes: read them to the end first
		d.err = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
			stopLeftoverPostgres(dataDir)
		}
		if t.Failed() {
			t.Logf("grape dev stdout:\n%s\nstderr:\n%s", d.stdout(), d.stderr())
		}
	})
	return d
}

func (d *devProcess) stdout() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *devProcess) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errOut.String()
}

// waitFor waits until stdout matches pattern and returns its first group.
func (d *devProcess) waitFor(t *testing.T, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.After(3 * time.Minute)
	for {
		if m := re.FindStringSubmatch(d.stdout()); m != nil {
			return m[1]
		}
		select {
		case <-d.grew:
		case <-d.exited:
			t.Fatalf("grape dev exited (%v) before printing %q:\n%s\n%s", d.err, pattern, d.stdout(), d.stderr())
		case <-deadline:
			t.Fatalf("grape dev did not print %q within 3 minutes:\n%s\n%s", pattern, d.stdout(), d.stderr())
		}
	}
}

// interrupt is Ctrl-C: SIGINT, then grape dev must exit 0 by itself.
func (d *devProcess) interrupt(t *testing.T) {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-d.exited:
		require.NoError(t, d.err, "grape dev after SIGINT:\n%s", d.stderr())
	case <-time.After(90 * time.Second):
		t.Fatalf("grape dev did not stop within 90s of SIGINT:\n%s", d.stderr())
	}
}

func (d *devProcess) jsonLogs(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(d.stderr()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "stderr line is not JSON: %q", line)
		out = append(out, rec)
	}
	return out
}

// cleanEnv is this process's environment without GRAPE_* and AWS_*: the
// test decides where grape dev's database and AWS are.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GRAPE_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func grapeCmd(t *testing.T, bin, dbURL string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), "GRAPE_DATABASE_URL="+dbURL)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// reachableTempDir is a temp dir the postgres user can traverse (grape dev
// runs PostgreSQL as postgres when the tests run as root).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "grape-dev-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func postmasterPid(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postgres", "data", "postmaster.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	require.NoError(t, err)
	return pid
}

// alive reports whether pid runs; an exited process not yet reaped (a
// zombie) does not count.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so read after the last ')'.
	rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// processesWith lists the pids whose command line contains every one of subs.
func processesWith(subs ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		all := true
		for _, s := range subs {
			all = all && strings.Contains(cmdline, s)
		}
		if all {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopLeftoverPostgres stops the cluster of a grape dev that was killed (a
// failed test): PostgreSQL runs in its own process group and outlives it.
func stopLeftoverPostgres(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postgres", "data", "postmaster.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])); err == nil {
		_ = syscall.Kill(pid, syscall.SIGQUIT) // immediate shutdown
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// scraped is one /metrics page.
type scraped map[string]*dto.MetricFamily

func scrape(t *testing.T, url string) scraped {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// metric finds the one series of name with the given label pairs.
func (s scraped) metric(t *testing.T, name string, labelPairs ...string) *dto.Metric {
	t.Helper()
	mf, ok := s[name]
	require.True(t, ok, "%s is not exported", name)
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labelPairs); i += 2 {
			match = match && labels[labelPairs[i]] == labelPairs[i+1]
		}
		if match {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "%s%v", name, labelPairs)
	return found[0]
}

func (s scraped) value(t *testing.T, name string, labelPairs ...string) float64 {
	t.Helper()
	m := s.metric(t, name, labelPairs...)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s is neither counter nor gauge", name)
	return 0
}

func (s scraped) histogramCount(t *testing.T, name string, labelPairs ...string) uint64 {
	t.Helper()
	return s.metric(t, name, labelPairs...).GetHistogram().GetSampleCount()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
