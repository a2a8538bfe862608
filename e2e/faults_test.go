package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// The fault-injection suite (issue 8): each test breaks one thing a real
// agent meets — its own process, the database, the git remote, the disk, the
// state backend — while a deployment runs, states the outcome it expects, and
// checks it on the data: the deployment rows, every log line (seq gapless),
// the audit repository and what moto holds. Run it alone with
// `go test -race -run Fault ./e2e/`.

// TestFaultKillDuringPlan: kill -9 of the agent while terraform plans.
//
// Expected: nothing was applied, so the surviving agent's rescuer requeues
// the deployment (attempt 1 of 3 lost, "requeued"); a second agent runs it
// again from the start as attempt 2 and it succeeds. terraform dies with its
// agent (Pdeathsig), and so do its providers: nothing keeps running in the
// dead agent's data dir. Both attempts are in one gapless log, and the audit
// repository holds one commit per attempt, fsck clean.
func TestFaultKillDuringPlan(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newFaultEnv(t, envOptions{})
	cfg := e.config("killplan", fmt.Sprintf(vpcOnly, "kill-plan"))
	a1 := e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionPlan)
	e.waitPhase(d.ID, store.PhasePlan, 2*time.Minute)
	runDir := a1.dataDir + "/runs/" + d.ID.String()
	// terraform plan is running once its provider is up: kill then.
	waitProcs(t, runDir, "terraform-provi", time.Minute)
	before := procsUnder(runDir)
	a1.kill()
	t.Logf("killed agent-1 during plan; it had %v", before)
	requireNoProcsUnder(t, a1.dataDir, 10*time.Second)

	// The second agent starts after the kill, as a replacement would.
	a2 := e.startAgent("agent-2", "--lease", "5s")
	got := e.wait(d.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, 2, got.Attempt, "one lost attempt, one that succeeded")
	require.Equal(t, "agent-2", deref(got.ClaimedBy))
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	requireOrder(t, lines,
		"[agent] claimed by agent agent-1", "[agent] phase: plan",
		"[agent] agent agent-1 lost during plan on attempt 1 of 3; requeued",
		"[agent] attempt 2 of 3 on agent agent-2", "[agent] phase: render", "[agent] phase: plan", "[agent] succeeded")
	require.Len(t, a2.records(t, "took back a deployment from a lost agent"), 1)
	require.Zero(t, e.vpcCount(), "a plan creates nothing")

	// One commit per attempt; the second renders the same tree (empty commit).
	require.Len(t, e.commitsOf(d.ID), 2)
	require.Equal(t, deref(got.CommitSHA), e.commitsOf(d.ID)[0])
	e.git("fsck", "--strict")
}

// TestFaultKillDuringApply: kill -9 of the agent while terraform applies, for
// a config with S3 state and one with local state.
//
// Expected: both end failed with the rescuer's "agent agent-1 lost during
// apply…" and are never applied again (attempt stays 1, nobody claims them).
// terraform and its providers die with the agent. What the dead terraform
// left is checked and reported:
//   - S3: its lock object stays (OperationTypeApply). The config's next run
//     fails with kind state_lock, naming that lock (ID, owner) and the lost
//     deployment that left it, and says to check the state before unlocking.
//     After the lock is removed (what terraform force-unlock does), a plan runs.
//   - local: .terraform.tfstate.lock.info stays next to the state in the dead
//     agent's data dir, but the lock itself (an fcntl lock) died with the
//     process: nothing holds the state file.
func TestFaultKillDuringApply(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newFaultEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	s3cfg := e.config("applys3", `{"region": "eu-central-1", "tags": {"kill": "s3"}, "modules": {"vpc": {"nat_gateway": "none"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/applys3.tfstate", "region": "eu-central-1", "use_path_style": true}}`)
	localCfg := e.config("applylocal", fmt.Sprintf(vpcOnly, "kill-local"))
	a1 := e.startAgent("agent-1", "--concurrency", "2")
	ds := e.deploy(s3cfg, store.ActionApply)
	dl := e.deploy(localCfg, store.ActionApply)
	e.waitPhase(ds.ID, store.PhaseApply, 3*time.Minute)
	e.waitPhase(dl.ID, store.PhaseApply, 3*time.Minute)
	// Let both applies create something, then kill the agent.
	time.Sleep(3 * time.Second)
	a1.kill()
	requireNoProcsUnder(t, a1.dataDir, 10*time.Second)

	a2 := e.startAgent("agent-2", "--lease", "5s")
	for _, d := range []store.Deployment{ds, dl} {
		got := e.wait(d.ID, 2*time.Minute, store.StatusFailed)
		require.Equal(t, store.KindAgentLost, deref(got.ErrorKind))
		require.Equal(t, "agent agent-1 lost during apply: infrastructure may be partly changed; check the state (and any state lock it left) before deploying again", deref(got.Error))
		require.Equal(t, 1, got.Attempt, "an interrupted apply is never run again")
		lines := e.logs(d.ID)
		requireGapless(t, lines)
		require.Equal(t, 1, countLines(lines, "phase: apply"))
		require.Zero(t, countLines(lines, "agent-2"), "agent-2 never ran it")
	}
	for _, rec := range a2.records(t, "deployment claimed") {
		require.NotContains(t, []string{ds.ID.String(), dl.ID.String()}, rec["deployment_id"], "agent-2 claimed a deployment lost during apply")
	}

	// S3: the lock of the dead apply is still there.
	var lock struct{ ID, Operation, Who, Created string }
	require.NoError(t, json.Unmarshal([]byte(e.awsObject("grape-state", "e2e/applys3.tfstate.tflock")), &lock))
	require.Equal(t, "OperationTypeApply", lock.Operation)
	t.Logf("S3 lock left by the dead apply: %+v", lock)
	next := e.deploy(s3cfg, store.ActionPlan)
	blocked := e.wait(next.ID, 2*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindStateLock, deref(blocked.ErrorKind))
	msg := deref(blocked.Error)
	require.Contains(t, msg, lock.ID)
	require.Contains(t, msg, lock.Who)
	require.Contains(t, msg, fmt.Sprintf("left by deployment %s, whose agent agent-1 was lost during apply", ds.ID))
	e.aws("s3api", "delete-object", "--bucket", "grape-state", "--key", "e2e/applys3.tfstate.tflock")
	after := e.deploy(s3cfg, store.ActionPlan)
	e.wait(after.ID, 2*time.Minute, store.StatusSucceeded)

	// Local: the lock info file stays, the lock does not.
	statePath := a1.dataDir + "/state/e2e/applylocal/terraform.tfstate"
	info := readFile(t, a1.dataDir+"/state/e2e/applylocal/.terraform.tfstate.lock.info")
	require.Contains(t, info, `"Operation":"OperationTypeApply"`)
	t.Logf("local lock info left by the dead apply: %s", info)
	requireUnlocked(t, statePath)
}

// TestFaultPostgresRestartDuringPlanAndApply: `pg_ctl restart -m fast` once
// while terraform plans and once while it applies (a VPC only, cheaper than
// TestDeployLifecycle's RDS).
//
// Expected: the run does not notice beyond retried writes: it succeeds, every
// resource terraform reported is in the log in order, seq is gapless, and
// the phases were recorded in order.
func TestFaultPostgresRestartDuringPlanAndApply(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newFaultEnv(t, envOptions{ownPostgres: true})
	cfg := e.config("pgrestart", fmt.Sprintf(vpcOnly, "pg-restart"))
	a := e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionApply)
	e.waitPhase(d.ID, store.PhasePlan, 2*time.Minute)
	time.Sleep(time.Second)
	require.NoError(t, e.pg.Restart(e.ctx))
	e.waitPhase(d.ID, store.PhaseApply, 2*time.Minute)
	time.Sleep(2 * time.Second)
	require.NoError(t, e.pg.Restart(e.ctx))

	got := e.wait(d.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, got.Attempt)
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	var summary struct {
		Add       int
		Resources []struct{ Address string }
	}
	require.NoError(t, json.Unmarshal(got.PlanSummary, &summary))
	require.Positive(t, summary.Add)
	text := joinLines(lines)
	for _, r := range summary.Resources {
		require.Contains(t, text, r.Address+": Creation complete", "the log lost a line")
	}
	require.Contains(t, text, fmt.Sprintf("Apply complete! Resources: %d added, 0 changed, 0 destroyed.", summary.Add))
	requireOrder(t, lines, "[agent] phase: render", "[agent] phase: commit", "[agent] phase: init", "[agent] phase: plan", "[agent] phase: apply", "[agent] phase: outputs", "[agent] succeeded")
	require.Equal(t, 1, e.vpcCount())
	require.True(t, a.alive())
}

// TestFaultPostgresDownAtAgentStart: the agent starts while its database is
// down (a machine that boots before its database).
//
// Expected: the agent does not exit; it says it is retrying, with a growing
// backoff; once the database is back it comes up and runs the deployment
// that was queued before the outage.
func TestFaultPostgresDownAtAgentStart(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newFaultEnv(t, envOptions{ownPostgres: true})
	cfg := e.config("pgdown", `{"region": "eu-central-1", "modules": {}}`)
	d := e.deploy(cfg, store.ActionPlan)
	require.NoError(t, e.pg.Stop(e.ctx))
	a := e.startAgent("agent-1")
	// Backoff 1s, 2s, 4s: wait for the third try to be announced.
	deadline := time.Now().Add(30 * time.Second)
	for len(a.records(t, "database unreachable; retrying")) < 3 {
		require.True(t, a.alive(), "the agent exited instead of waiting for its database:\n%s", a.output())
		require.False(t, time.Now().After(deadline), "the agent does not say it retries:\n%s", a.output())
		time.Sleep(100 * time.Millisecond)
	}
	var backoffs []string
	for _, rec := range a.records(t, "database unreachable; retrying") {
		backoffs = append(backoffs, fmt.Sprint(rec["retry_in"]))
		require.Contains(t, fmt.Sprint(rec["err"]), "connect")
	}
	require.Equal(t, []string{"1s", "2s", "4s"}, backoffs[:3])
	require.Empty(t, a.records(t, "agent started"))

	require.NoError(t, e.pg.Start(e.ctx))
	got := e.wait(d.ID, 2*time.Minute, store.StatusSucceeded)
	require.Equal(t, "agent-1", deref(got.ClaimedBy))
	require.Len(t, a.records(t, "agent started"), 1)
	requireGapless(t, e.logs(d.ID))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
