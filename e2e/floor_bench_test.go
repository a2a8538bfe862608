package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// BenchmarkDriftCheckVsBarePlan: a VPC config (16 resources, S3 state on
// moto) applied once; then, alternating, 3 runs each of `grape drift check`
// (a whole CLI process: connect, check out the last applied commit, init,
// plan) and of a bare `terraform plan -detailed-exitcode` in an initialised
// checkout of the same commit against the same state, and a third kind of
// run: `grape drift check` with a data dir kept across checks (as the agent
// and an operator's cron job have), which reuses the config's kept init.
// Reports the medians and their ratios (target ≤ 1.15).
func BenchmarkDriftCheckVsBarePlan(b *testing.B) {
	e := newEnv(b, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	cfg := e.config("drifty", driftIntent)
	a := e.startAgent("applier")
	applied := e.wait(e.deploy(cfg, store.ActionApply).ID, 5*time.Minute, store.StatusSucceeded)
	a.stop(b)

	// The same commit, checked out and initialised once, for bare terraform.
	sha := deref(applied.CommitSHA)
	tmp := b.TempDir()
	// The audit directory is keyed by the config's id (rename-safe).
	archive := exec.Command("sh", "-c", `git --git-dir="$1" archive "$2" "clusters/e2e/$4" | tar -x -C "$3"`, "sh", e.repoDir, sha, tmp, cfg.ID.String())
	out, err := archive.CombinedOutput()
	require.NoError(b, err, "%s", out)
	dir := filepath.Join(tmp, "clusters", "e2e", cfg.ID.String())
	tfEnv := append(e.agentEnviron(), "TF_CLI_CONFIG_FILE="+testsupport.TerraformCLIConfig(b), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	terraform := func(args ...string) (int, time.Duration) {
		cmd := exec.CommandContext(e.ctx, testsupport.TerraformBinary(b), args...)
		cmd.Dir, cmd.Env = dir, tfEnv
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), took
		}
		require.NoError(b, err, "%s", out)
		return 0, took
	}
	code, _ := terraform("init", "-input=false", "-no-color")
	require.Zero(b, code)

	// A data dir kept across checks, as an operator's cron job or the agent
	// has: the check reuses the config's kept init after the first.
	kept := filepath.Join(b.TempDir(), "drift-check-kept")
	res := e.startAgentArgsOnceAt(kept, "drift-check", "drift", "check", "--config", "drifty", "--json")
	require.Zero(b, res.code, "in sync: %s %s", res.stdout, res.stderr)

	b.ResetTimer()
	for range b.N {
		var grape, reused, bare []time.Duration
		for range 3 {
			start := time.Now()
			res := e.startAgentArgsOnce("drift-check", "drift", "check", "--config", "drifty", "--json")
			grape = append(grape, time.Since(start))
			require.Zero(b, res.code, "in sync: %s %s", res.stdout, res.stderr)

			start = time.Now()
			res = e.startAgentArgsOnceAt(kept, "drift-check", "drift", "check", "--config", "drifty", "--json")
			reused = append(reused, time.Since(start))
			require.Zero(b, res.code, "in sync: %s %s", res.stdout, res.stderr)

			code, took := terraform("plan", "-detailed-exitcode", "-input=false", "-no-color", "-lock-timeout=0s")
			require.Zero(b, code, "bare plan should find no changes")
			bare = append(bare, took)
		}
		g, k, p := median(grape), median(reused), median(bare)
		b.Logf("drift check %v, with a kept data dir %v, bare plan %v", grape, reused, bare)
		b.ReportMetric(g.Seconds(), "drift-check-s")
		b.ReportMetric(k.Seconds(), "drift-check-kept-init-s")
		b.ReportMetric(p.Seconds(), "bare-plan-s")
		b.ReportMetric(g.Seconds()/p.Seconds(), "drift/bare-plan")
		b.ReportMetric(k.Seconds()/p.Seconds(), "drift-kept-init/bare-plan")
	}
	_ = os.RemoveAll(tmp)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// floorIntent is a VPC (16 resources) on S3 state whose tags change per
// round, so every deployment and every bare run is an in-place update of
// the same resources.
func floorIntent(round string) string {
	return `{"region": "eu-central-1", "tags": {"round": "` + round + `"}, "modules": {"vpc": {"nat_gateway": "none", "name": "floor"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/floor.tfstate", "region": "eu-central-1", "use_path_style": true}}`
}

// BenchmarkDeploymentVsBareApply: a VPC config (16 resources, S3 state on
// moto) applied once by a running agent; then, alternating, 3 rounds each
// of a deployment that changes every resource's tags (the agent's whole
// path: claim, render, commit, init, plan, show -json, policies, apply,
// outputs, notes) and of bare `terraform init` + `plan -out` + `apply` in
// a fresh checkout of the previous round's commit, which changes the same
// tags back on the same state. The deployment is timed from its claim to
// its end (started_at → finished_at); the agent's own phase timings say
// where the time goes. Reports the medians and their ratio (target ≤ 1.05).
func BenchmarkDeploymentVsBareApply(b *testing.B) {
	e := newEnv(b, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	cfg := e.config("floor", floorIntent("r0"))
	a := e.startAgent("deployer")
	prev := e.wait(e.deploy(cfg, store.ActionApply).ID, 5*time.Minute, store.StatusSucceeded)

	tfEnv := append(e.agentEnviron(), "TF_CLI_CONFIG_FILE="+testsupport.TerraformCLIConfig(b), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	terraform := func(dir string, args ...string) time.Duration {
		cmd := exec.CommandContext(e.ctx, testsupport.TerraformBinary(b), args...)
		cmd.Dir, cmd.Env = dir, tfEnv
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		require.NoError(b, err, "terraform %v: %s", args, out)
		return took
	}
	// bare runs init + plan -out + apply of commit sha's rendering in a
	// fresh directory, as a CI job would; show -json of its plan is timed
	// apart (not part of the bare total) to say what the deployment's
	// summary, diff and policies cost.
	bareSteps := map[string][]time.Duration{}
	step := func(name string, d time.Duration) time.Duration {
		bareSteps[name] = append(bareSteps[name], d)
		return d
	}
	bare := func(sha string) (total, show time.Duration) {
		tmp := b.TempDir()
		archive := exec.Command("sh", "-c", `git --git-dir="$1" archive "$2" "clusters/e2e/$4" | tar -x -C "$3"`, "sh", e.repoDir, sha, tmp, cfg.ID.String())
		out, err := archive.CombinedOutput()
		require.NoError(b, err, "%s", out)
		dir := filepath.Join(tmp, "clusters", "e2e", cfg.ID.String())
		total += step("init", terraform(dir, "init", "-input=false", "-no-color"))
		total += step("plan", terraform(dir, "plan", "-input=false", "-no-color", "-lock-timeout=0s", "-out=bare.tfplan"))
		show = terraform(dir, "show", "-json", "bare.tfplan")
		total += step("apply", terraform(dir, "apply", "-input=false", "-no-color", "bare.tfplan"))
		_ = os.RemoveAll(tmp)
		return total, show
	}

	b.ResetTimer()
	for range b.N {
		var grape, bareRuns, shows []time.Duration
		var ids []string
		for i := range 3 {
			cfg = e.config("floor", floorIntent(fmt.Sprintf("g%d-%d", i, time.Now().UnixNano())))
			d := e.wait(e.deploy(cfg, store.ActionApply).ID, 5*time.Minute, store.StatusSucceeded)
			grape = append(grape, d.FinishedAt.Sub(*d.StartedAt))
			ids = append(ids, d.ID.String())
			require.Contains(b, e.logText(d.ID), "init: reused from", "the config's kept init should be reused")

			// The previous round's rendering: its tags differ from what the
			// deployment just applied, so bare terraform changes them back.
			total, show := bare(deref(prev.CommitSHA))
			bareRuns, shows = append(bareRuns, total), append(shows, show)
			prev = d
		}
		g, p := median(grape), median(bareRuns)
		phases := agentPhases(a.output(), ids)
		b.Logf("deployment %v, bare init+plan+apply %v, bare show -json %v; agent phases and commands (median): %v; bare commands: %v", grape, bareRuns, shows, phases, bareSteps)
		b.ReportMetric(g.Seconds(), "deploy-s")
		b.ReportMetric(p.Seconds(), "bare-init+plan+apply-s")
		b.ReportMetric(median(shows).Seconds(), "bare-show-json-s")
		for _, ph := range []string{"init", "plan", "apply", "plan-cmd", "show-cmd"} {
			b.ReportMetric(phases[ph].Seconds(), "agent-"+ph+"-s")
		}
		for _, c := range []string{"init", "plan", "apply"} {
			b.ReportMetric(median(bareSteps[c]).Seconds(), "bare-"+c+"-s")
		}
		clear(bareSteps)
		b.ReportMetric(g.Seconds()/p.Seconds(), "deploy/bare")
	}
	a.stop(b)
}

// agentPhases reads the agent's debug log ("terraform phase finished", and
// "terraform command finished" for plan and show -json inside the plan
// phase) and returns each one's median over the given deployments' run dirs.
func agentPhases(log string, ids []string) map[string]time.Duration {
	byPhase := map[string][]time.Duration{}
	for _, line := range strings.Split(log, "\n") {
		var m struct {
			Msg      string `json:"msg"`
			Phase    string `json:"phase"`
			Command  string `json:"command"`
			Dir      string `json:"dir"`
			Duration int64  `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		switch m.Msg {
		case "terraform phase finished":
		case "terraform command finished": // plan's two commands
			m.Phase = m.Command + "-cmd"
		default:
			continue
		}
		for _, id := range ids {
			if strings.Contains(m.Dir, id) {
				byPhase[m.Phase] = append(byPhase[m.Phase], time.Duration(m.Duration))
			}
		}
	}
	out := map[string]time.Duration{}
	for ph, ds := range byPhase {
		out[ph] = median(ds)
	}
	return out
}
