package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// engineIntent is a VPC without NAT (fast on moto) with S3 state.
func engineIntent(name string, publicIPs bool) string {
	return fmt.Sprintf(`{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "none", "name": %q, "map_public_ip_on_launch": %t}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/%s.tfstate", "region": "eu-central-1", "use_path_style": true}}`, name, publicIPs, name)
}

// TestEngineLifecycle runs a VPC's whole life — apply, a change, drift
// found by `grape drift check`, destroy — under terraform and under
// OpenTofu, each agent started with its engine as --terraform-binary and the
// same provider mirror (laid out for OpenTofu by the runner). Each
// deployment records the engine, and its commit says it in a trailer.
func TestEngineLifecycle(t *testing.T) {
	// Parallel at the top too: a top-level test that is not holds back every
	// test after it in the suite until both engines' lifecycles are done.
	t.Parallel()
	for _, eng := range testsupport.Engines(t) {
		t.Run(eng.Name, func(t *testing.T) {
			t.Parallel()
			testEngineLifecycle(t, eng)
		})
	}
}

func testEngineLifecycle(t *testing.T, eng testsupport.Engine) {
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	name := "net-" + strings.TrimPrefix(eng.Name, "open")
	cfg := e.config(name, engineIntent(name, false))
	e.startAgent("agent-1", "--terraform-binary", eng.Binary)
	engine, err := runner.DetectEngine(e.ctx, eng.Binary)
	require.NoError(t, err)

	requireEngine := func(d store.Deployment) {
		t.Helper()
		require.Equal(t, eng.Name, deref(d.Engine), "deployment %s", d.ID)
		require.Equal(t, engine.Version, deref(d.EngineVersion))
		if d.CommitSHA != nil {
			msg := e.git("log", "-1", "--format=%B", *d.CommitSHA)
			require.Contains(t, msg, "Grape-Engine: "+engine.String())
		}
	}

	// 1. Apply.
	applied := e.wait(e.deploy(cfg, store.ActionApply).ID, 4*time.Minute, store.StatusSucceeded)
	var summary runner.PlanSummary
	require.NoError(t, json.Unmarshal(applied.PlanSummary, &summary))
	require.Positive(t, summary.Add)
	lines := e.logs(applied.ID)
	requireApplyLog(t, lines, summary)
	requireEngine(applied)
	// The outputs come from apply's own -json stream: no terraform output.
	requireLine(t, lines, "as terraform apply reported them (no separate terraform output)")
	var outs map[string]runner.Output
	require.NoError(t, json.Unmarshal(applied.Outputs, &outs))
	var vpcID string
	require.NoError(t, json.Unmarshal(outs["vpc_vpc_id"].Value, &vpcID), "outputs %s", applied.Outputs)
	require.True(t, strings.HasPrefix(vpcID, "vpc-"), vpcID)
	requireLine(t, lines, "init: kept as ")

	// 2. A change: the public subnets are updated in place.
	cfg = e.config(name, engineIntent(name, true))
	changed := e.wait(e.deploy(cfg, store.ActionApply).ID, 4*time.Minute, store.StatusSucceeded)
	require.NoError(t, json.Unmarshal(changed.PlanSummary, &summary))
	require.Equal(t, [3]int{0, 2, 0}, [3]int{summary.Add, summary.Change, summary.Destroy}, "plan summary %s", changed.PlanSummary)
	requireEngine(changed)
	// Only a variable value changed: the first run's init is reused.
	requireLine(t, e.logs(changed.ID), "init: reused from ")
	requireLine(t, e.logs(changed.ID), "and "+eng.Name+" "+engine.Version+"); terraform init not run")

	// 3. Drift: in sync, then a tag added out of band is found.
	drift := func() (int, store.DriftReport) {
		a := e.startAgentArgsOnce("drift-check", "drift", "check", "--config", name, "--json", "--terraform-binary", eng.Binary)
		var rep store.DriftReport
		require.NoError(t, json.Unmarshal([]byte(a.stdout), &rep), "drift check printed: %s\n%s", a.stdout, a.stderr)
		return a.code, rep
	}
	code, rep := drift()
	require.Equal(t, 0, code, "in sync after apply: %s (report %+v)", deref(rep.Error), rep)
	var vpcs struct{ Vpcs []struct{ VpcId string } }
	require.NoError(t, json.Unmarshal([]byte(e.aws("ec2", "describe-vpcs", "--filters", "Name=tag:Name,Values="+name)), &vpcs))
	require.Len(t, vpcs.Vpcs, 1)
	e.aws("ec2", "create-tags", "--resources", vpcs.Vpcs[0].VpcId, "--tags", "Key=owner,Value=console-user")
	code, rep = drift()
	require.Equal(t, 2, code, "drifted: %+v", rep)
	require.Contains(t, string(rep.Details), "module.vpc[0].aws_vpc.this")
	check, err := e.st.GetDeployment(e.ctx, *rep.DeploymentID)
	require.NoError(t, err)
	require.Equal(t, eng.Name, deref(check.Engine))

	// 4. Destroy: the default policies send a VPC's deletion to a person.
	d := e.deploy(cfg, store.ActionDestroy)
	e.wait(d.ID, 4*time.Minute, store.StatusAwaitingApproval)
	requireLine(t, e.logs(d.ID), "policy warnings: this run needs approval before apply")
	e.grape("approve", d.ID.String())
	destroyed := e.wait(d.ID, 4*time.Minute, store.StatusSucceeded)
	require.NoError(t, json.Unmarshal(destroyed.PlanSummary, &summary))
	requireLine(t, e.logs(destroyed.ID), fmt.Sprintf("Apply complete! Resources: 0 added, 0 changed, %d destroyed.", summary.Destroy))
	require.NotContains(t, e.aws("ec2", "describe-vpcs", "--filters", "Name=tag:Name,Values="+name), vpcs.Vpcs[0].VpcId)
	requireEngine(destroyed)
}

// TestApprovalExpires: a plan nobody decides on within the config's
// approval timeout is cancelled ("approval expired"), its saved plan is
// removed from the agent's data dir, nothing is applied, and the run queued
// behind it — which said what it waited for — goes ahead.
func TestApprovalExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	cfg := e.config("gated", fmt.Sprintf(vpcOnly, "expiring"), "--require-approval", "--approval-timeout", "1m")
	a := e.startAgent("agent-1")

	d := e.deploy(cfg, store.ActionApply)
	parked := e.wait(d.ID, 3*time.Minute, store.StatusAwaitingApproval)
	runDir := filepath.Join(a.dataDir, "runs", d.ID.String())
	require.DirExists(t, runDir, "the saved plan waits in the run dir")
	behind := e.deploy(cfg, store.ActionPlan)
	require.Contains(t, e.grape("status", behind.ID.String()), "queued: waiting for deployment "+d.ID.String()+", which has awaited approval for")

	expired := e.wait(d.ID, 3*time.Minute, store.StatusCancelled)
	require.True(t, strings.HasPrefix(deref(expired.Error), "approval expired: nobody approved or rejected the plan within 1m0s"), deref(expired.Error))
	require.GreaterOrEqual(t, expired.FinishedAt.Sub(*parked.AwaitingApprovalAt), time.Minute)
	requireLine(t, e.logs(d.ID), "approval expired")
	require.Eventually(t, func() bool { _, err := os.Stat(runDir); return os.IsNotExist(err) }, time.Minute, 200*time.Millisecond,
		"the expired plan's run dir should be removed")
	require.Zero(t, e.vpcCount(), "an expired plan is never applied")
	require.Contains(t, a.output(), "approval expired: deployment cancelled")

	e.wait(behind.ID, 3*time.Minute, store.StatusSucceeded)
	_, _, err := e.grapeResult("approve", d.ID.String())
	require.Error(t, err, "an expired plan cannot be approved")
}
