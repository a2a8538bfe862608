package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// BenchmarkDriftPass: one drift pass over 50 idle configs of a small module
// (terraform_data: no cloud API, so the agent's share is visible), by a real
// agent process, with drift concurrency 1 and 2. Reports the pass's wall
// time, the agent's time per check outside terraform, and the agent's peak
// RSS (VmHWM of a process started for the pass).
func BenchmarkDriftPass(b *testing.B) {
	e := newEnv(b, envOptions{})
	templates, err := filepath.Abs("testdata/templates-data")
	require.NoError(b, err)
	const n = 50
	var cfgs []store.Config
	for i := 0; i < n; i++ {
		c, err := e.st.UpsertConfig(e.ctx, e.cluster, fmt.Sprintf("data-%02d", i), []byte(`{"modules": {"data": {}}}`), store.ConfigSettings{})
		require.NoError(b, err)
		cfgs = append(cfgs, c)
	}
	// The shared data dir keeps the local state between the agents.
	dataDir := filepath.Join(b.TempDir(), "agent")
	agentArgs := func(extra ...string) []string {
		return append([]string{"agent", "--cluster", e.cluster, "--agent-id", "bench", "--data-dir", dataDir,
			"--workspace-url", e.repo, "--provider-mirror", testsupport.ProviderMirror, "--templates", templates,
			"--poll-interval", "100ms", "--log-format", "json", "--log-level", "debug", "--metrics-listen", ""}, extra...)
	}
	applier := e.startAgentArgs(dataDir, agentArgs("--concurrency", "2", "--drift-schedule", "off")...)
	var ids []string
	for _, c := range cfgs {
		ids = append(ids, e.deploy(c, store.ActionApply).ID.String())
	}
	for _, id := range ids {
		e.wait(mustUUID(id), 10*time.Minute, store.StatusSucceeded)
	}
	applier.stop(b)

	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for _, conc := range []int{1, 2} {
			// Every config applied and checked long ago: all due at once.
			_, err := e.pool.Exec(e.ctx, `UPDATE deployments SET finished_at = now() - interval '3 hours' WHERE status = 'succeeded'`)
			require.NoError(b, err)
			_, err = e.pool.Exec(e.ctx, `UPDATE drift_reports SET checked_at = now() - interval '3 hours'`)
			require.NoError(b, err)
			t0 := time.Now()
			a := e.startAgentArgs(dataDir, agentArgs("--concurrency", strconv.Itoa(conc),
				"--drift-schedule", "@every 1h", "--drift-concurrency", strconv.Itoa(conc))...)
			deadline := time.Now().Add(15 * time.Minute)
			for {
				var done int
				require.NoError(b, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM drift_reports WHERE checked_at >= $1`, t0).Scan(&done))
				if done == n {
					break
				}
				require.True(b, time.Now().Before(deadline), "only %d of %d checks in 15 minutes", done, n)
				time.Sleep(100 * time.Millisecond)
			}
			wall := time.Since(t0)
			peak := vmHWM(b, a.cmd.Process.Pid)
			a.stop(b)
			var bad int
			require.NoError(b, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM drift_reports WHERE checked_at >= $1 AND status <> 'in_sync'`, t0).Scan(&bad))
			require.Zero(b, bad, "terraform_data never drifts")
			overhead := checkOverheads(b, a.output())
			require.Len(b, overhead, n)
			sort.Slice(overhead, func(i, j int) bool { return overhead[i] < overhead[j] })
			name := fmt.Sprintf("c%d-", conc)
			b.ReportMetric(wall.Seconds(), name+"pass-s")
			b.ReportMetric(float64(overhead[len(overhead)/2].Milliseconds()), name+"overhead-p50-ms")
			b.ReportMetric(float64(peak)/1024, name+"peak-rss-MiB")
		}
	}
}

// vmHWM is a process's peak resident set size in KiB.
func vmHWM(tb testing.TB, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(tb, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			require.NoError(tb, err)
			return kb
		}
	}
	tb.Fatal("no VmHWM in /proc status")
	return 0
}

// checkOverheads reads the agent's JSON log: for each drift check, the run's
// time minus the time terraform's commands took.
func checkOverheads(tb testing.TB, log string) []time.Duration {
	type line struct {
		Msg          string `json:"msg"`
		Action       string `json:"action"`
		DeploymentID string `json:"deployment_id"`
		Took         string `json:"took"`
		Dir          string `json:"dir"`
		Duration     int64  `json:"duration"`
	}
	terraform := map[string]time.Duration{}
	var out []time.Duration
	runs := map[string]time.Duration{}
	for _, raw := range strings.Split(log, "\n") {
		var l line
		if json.Unmarshal([]byte(raw), &l) != nil {
			continue
		}
		switch l.Msg {
		case "terraform phase finished":
			// dir is <data-dir>/runs/<deployment id>/tree
			terraform[filepath.Base(filepath.Dir(l.Dir))] += time.Duration(l.Duration)
		case "deployment finished":
			if l.Action == "drift" {
				took, err := time.ParseDuration(l.Took)
				require.NoError(tb, err)
				runs[l.DeploymentID] = took
			}
		}
	}
	for id, took := range runs {
		out = append(out, took-terraform[id])
	}
	return out
}
