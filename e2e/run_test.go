package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// vpcOnly is the cheapest real stack: a VPC with subnets, no NAT.
const vpcOnly = `{"region": "eu-central-1", "tags": {"step": "%s"}, "modules": {"vpc": {"nat_gateway": "none"}}}`

func (e *env) vpcCount() int {
	var out struct{ Vpcs []struct{ IsDefault bool } }
	require.NoError(e.t, json.Unmarshal([]byte(e.aws("ec2", "describe-vpcs")), &out))
	n := 0
	for _, v := range out.Vpcs {
		if !v.IsDefault {
			n++
		}
	}
	return n
}

// TestPlanOnlyApprovalAndRefusal: a plan-only run changes nothing; a config
// that requires approval parks after plan, applies exactly that plan once
// approved, and refuses an approval when the intent moved meanwhile.
func TestPlanOnlyApprovalAndRefusal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	cfg := e.config("gated", fmt.Sprintf(vpcOnly, "one"), "--require-approval")
	e.startAgent("agent-1")

	// Plan only: a summary, no resources.
	p := e.deploy(cfg, store.ActionPlan)
	planned := e.wait(p.ID, 3*time.Minute, store.StatusSucceeded)
	var s runner.PlanSummary
	require.NoError(t, json.Unmarshal(planned.PlanSummary, &s))
	require.Positive(t, s.Add)
	require.Zero(t, e.vpcCount(), "a plan must not create anything")

	// Approval: parked with its summary, applied after `grape approve`.
	d := e.deploy(cfg, store.ActionApply)
	parked := e.wait(d.ID, 3*time.Minute, store.StatusAwaitingApproval)
	require.True(t, parked.RequireApproval)
	require.NotEmpty(t, parked.PlanSummary)
	require.Zero(t, e.vpcCount())
	// The parked plan is an end of its own in the commit's git note.
	e.waitNote("Deployment: "+d.ID.String(), "Status: awaiting_approval")
	require.Contains(t, e.grape("approve", d.ID.String(), "--comment", "subnets reviewed with the network team"), "awaiting_approval")
	applied := e.wait(d.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, "subnets reviewed with the network team", deref(applied.ReviewComment))
	require.Contains(t, e.grape("status", d.ID.String()), `"subnets reviewed with the network team"`)
	require.Equal(t, deref(parked.CommitSHA), deref(applied.CommitSHA))
	require.Equal(t, "e2e-test", deref(applied.ApprovedBy))
	require.Equal(t, 1, e.vpcCount())
	requireOrder(t, e.logs(d.ID), "waiting for approval", "approved by e2e-test", "Apply complete!")

	// The intent changes while a plan waits: the approval is refused and
	// nothing is applied.
	cfg = e.config("gated", fmt.Sprintf(vpcOnly, "two"), "--require-approval")
	d2 := e.deploy(cfg, store.ActionApply)
	e.wait(d2.ID, 3*time.Minute, store.StatusAwaitingApproval)
	cfg = e.config("gated", fmt.Sprintf(vpcOnly, "three"), "--require-approval")
	_, errOut, err := e.grapeResult("approve", d2.ID.String())
	require.Error(t, err)
	require.Contains(t, errOut, fmt.Sprintf("approval refused: the config changed from v%d to v%d", cfg.Version-1, cfg.Version))
	refused, err := e.st.GetDeployment(e.ctx, d2.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, refused.Status)
	require.Equal(t, store.KindApprovalRefused, deref(refused.ErrorKind))
	require.NotContains(t, e.aws("ec2", "describe-vpcs"), `"Value": "two"`, "the refused plan was not applied")

	// Reject ends a parked deployment without applying it.
	d3 := e.deploy(cfg, store.ActionApply)
	e.wait(d3.ID, 3*time.Minute, store.StatusAwaitingApproval)
	require.Contains(t, e.grape("reject", d3.ID.String()), "cancelled")
	rejected, err := e.st.GetDeployment(e.ctx, d3.ID)
	require.NoError(t, err)
	require.Equal(t, store.KindRejected, deref(rejected.ErrorKind))
	require.NotContains(t, e.aws("ec2", "describe-vpcs"), `"Value": "three"`)

	// Each end is an event in the commit's git note: the parked plan, then
	// its apply with the approver; the rejection by a person.
	e.waitNote("Grape apply rejected", "Error: rejected: rejected by e2e-test")
	note := testsupport.RunGit(t, e.repoDir, "log", "-1", "--notes=grape", "--format=%N", deref(applied.CommitSHA))
	require.Less(t, strings.Index(note, "Status: awaiting_approval"), strings.Index(note, "Status: succeeded"), note)
	require.Contains(t, note, "Approved-By: e2e-test")
	require.Contains(t, note, "Comment: subnets reviewed with the network team", "the approver's comment is in the customer's git")
}

// TestCancelDuringApply: SIGINT reaches terraform, it stops, the deployment
// ends cancelled in apply, and the state lock is released (a next run works).
func TestCancelDuringApply(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	cfg := e.config("cancel", `{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "single", "az_count": 3}}}`)
	e.startAgent("agent-1", "--cancel-grace", "20s")
	d := e.deploy(cfg, store.ActionApply)
	// Cancel while terraform is creating resources.
	e.waitLogLine(d.ID, ": Creating...", 3*time.Minute)
	t0 := time.Now()
	e.grape("cancel", d.ID.String())
	got := e.wait(d.ID, 2*time.Minute, store.StatusCancelled)
	t.Logf("cancel took %s from request to final status", time.Since(t0))
	require.Equal(t, "cancelled by e2e-test during apply", deref(got.Error))
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	requireLine(t, lines, "Interrupt received")

	// The lock is free and the state consistent: a plan of the same config runs.
	next := e.deploy(cfg, store.ActionPlan)
	e.wait(next.ID, 3*time.Minute, store.StatusSucceeded)
}

// TestTimeoutStateLockAndTerraformError: the failure classes a person must
// tell apart, each with one clear sentence.
func TestTimeoutStateLockAndTerraformError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	// The lock case runs on an agent with the default plan timeout: on a
	// loaded machine terraform may take longer than 3s just to reach the
	// lock. The timeout case gets its own agent afterwards.
	first := e.startAgent("agent-1")

	// Another process holds the state lock (an S3 lock file).
	lockCfg := e.config("locked", `{"region": "eu-central-1", "modules": {"vpc": {}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/locked.tfstate", "region": "eu-central-1", "use_path_style": true}}`)
	lock := `{"ID":"4b1b5f2c-0000-4000-8000-000000000001","Operation":"OperationTypeApply","Info":"","Who":"alice@laptop","Version":"1.11.4","Created":"2026-11-27T08:00:00Z","Path":"grape-state/e2e/locked.tfstate"}`
	e.aws("s3api", "put-object", "--bucket", "grape-state", "--key", "e2e/locked.tfstate.tflock", "--body", writeTemp(t, lock))
	locked := e.deploy(lockCfg, store.ActionPlan)
	got := e.wait(locked.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindStateLock, deref(got.ErrorKind))
	require.Contains(t, deref(got.Error), "alice@laptop")
	require.NotContains(t, deref(got.Error), "\n")
	first.stop(t)

	// The plan runs longer than --timeout-plan.
	e.startAgent("agent-2", "--timeout-plan", "3s")
	slowCfg := e.config("slow", `{"region": "eu-central-1", "modules": {"vpc": {}}}`)
	slow := e.deploy(slowCfg, store.ActionPlan)
	got = e.wait(slow.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindTimeout, deref(got.ErrorKind))
	require.Equal(t, "timed out in plan after 3s", deref(got.Error))
}

// TestTerraformErrorFromAWS: an intent the schema accepts but AWS rejects
// fails in apply with the provider's reason in one sentence.
func TestTerraformErrorFromAWS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	cfg := e.config("bad-az", `{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "none", "availability_zones": ["eu-central-1x", "eu-central-1y"]}}}`)
	e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionApply)
	got := e.wait(d.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindApply, deref(got.ErrorKind))
	// The two subnets are created at once: either zone may be refused first.
	require.Regexp(t, `eu-central-1[xy]`, deref(got.Error))
	require.NotContains(t, deref(got.Error), "\n")
	requireLine(t, e.logs(d.ID), "InvalidParameterValue")
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := t.TempDir() + "/body"
	require.NoError(t, writeFile(p, content))
	return p
}
