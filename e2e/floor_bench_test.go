package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
// checkout of the same commit against the same state. Reports the medians
// and their ratio (target ≤ 1.15).
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

	b.ResetTimer()
	for range b.N {
		var grape, bare []time.Duration
		for range 3 {
			start := time.Now()
			res := e.startAgentArgsOnce("drift-check", "drift", "check", "--config", "drifty", "--json")
			grape = append(grape, time.Since(start))
			require.Zero(b, res.code, "in sync: %s %s", res.stdout, res.stderr)

			code, took := terraform("plan", "-detailed-exitcode", "-input=false", "-no-color", "-lock-timeout=0s")
			require.Zero(b, code, "bare plan should find no changes")
			bare = append(bare, took)
		}
		g, p := median(grape), median(bare)
		b.Logf("drift check %v, bare plan %v", grape, bare)
		b.ReportMetric(g.Seconds(), "drift-check-s")
		b.ReportMetric(p.Seconds(), "bare-plan-s")
		b.ReportMetric(g.Seconds()/p.Seconds(), "drift/bare-plan")
	}
	_ = os.RemoveAll(tmp)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
