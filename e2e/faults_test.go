package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// The fault-injection suite (issue 8): each test breaks one thing a real
// agent meets — its own process, the database, the git remote, the disk, the
// state backend — while a deployment runs, states the outcome it expects, and
// checks it on the data: the deployment rows, every log line (seq gapless),
// the audit repository and what moto holds. Run it alone with
// `go test -race -run Fault ./e2e/`.

// TestFaultKillDuringPlan: kill -9 of the agent while terraform plans, for a
// config with local state and one with S3 state.
//
// Expected: nothing was applied, so the surviving agent's rescuer requeues
// each deployment (attempt 1 of 3 lost, "requeued"); a second agent runs
// them again from the start as attempt 2 and they succeed. terraform dies
// with its agent (Pdeathsig); its providers may not (they are terraform's
// children, not the agent's), and agent-1, restarted on its data dir, kills
// those before it runs anything. The S3 plan lock the killed terraform could
// not release is recognised as the lost attempt's and released by the
// second attempt (the local backend's lock died with the process). Both
// attempts are in one gapless log, and the audit repository holds one
// commit per attempt, fsck clean.
func TestFaultKillDuringPlan(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	localCfg := e.config("killplan", fmt.Sprintf(vpcOnly, "kill-plan"))
	s3cfg := e.config("killplans3", `{"region": "eu-central-1", "tags": {"kill": "plan-s3"}, "modules": {"vpc": {"nat_gateway": "none"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/killplan.tfstate", "region": "eu-central-1", "use_path_style": true}}`)
	a1 := e.startAgent("agent-1", "--concurrency", "2")
	dl := e.deploy(localCfg, store.ActionPlan)
	ds := e.deploy(s3cfg, store.ActionPlan)
	// terraform plan is running once its provider is up and the S3 plan's
	// lock is taken; each run is held there until the other is too.
	resume := e.holdRuns(a1, []uuid.UUID{dl.ID, ds.ID}, func(id uuid.UUID) bool {
		d, err := e.st.GetDeployment(e.ctx, id)
		require.NoError(t, err)
		if d.PhaseName() != store.PhasePlan || !hasProc(a1.dataDir+"/runs/"+id.String(), "terraform-provi") {
			return false
		}
		return id != ds.ID || e.objectExists("grape-state", "e2e/killplan.tfstate.tflock")
	}, 3*time.Minute)
	before := procsUnder(a1.dataDir)
	a1.kill()
	resume()
	left := survivors(t, a1.dataDir, before)

	// The second agent starts after the kill, as a replacement would.
	a2 := e.startAgent("agent-2", "--lease", "5s", "--concurrency", "2")
	for _, d := range []store.Deployment{dl, ds} {
		got := e.wait(d.ID, 3*time.Minute, store.StatusSucceeded)
		require.Equal(t, 2, got.Attempt, "one lost attempt, one that succeeded")
		require.Equal(t, "agent-2", deref(got.ClaimedBy))
		lines := e.logs(d.ID)
		requireGapless(t, lines)
		requireOrder(t, lines,
			"[agent] claimed by agent agent-1", "[agent] phase: plan",
			"[agent] agent agent-1 lost during plan on attempt 1 of 3; requeued",
			"[agent] attempt 2 of 3 on agent agent-2", "[agent] phase: render", "[agent] phase: plan", "[agent] succeeded")
		// One commit per attempt; the second renders the same tree (an empty commit).
		require.Len(t, e.commitsOf(d.ID), 2)
		require.Equal(t, deref(got.CommitSHA), e.commitsOf(d.ID)[0])
	}
	requireOrder(t, e.logs(ds.ID), "[agent] attempt 2 of 3 on agent agent-2",
		"was left by an earlier attempt of this deployment, whose agent was lost; that plan has ended and a plan lock guards no write: releasing it",
		"[agent] terraform force-unlock -force ", "[agent] succeeded")
	require.Len(t, a2.records(t, "took back a deployment from a lost agent"), 2)
	require.Zero(t, e.vpcCount(), "a plan creates nothing")
	e.fsck()
	e.requireOrphansKilled(a1, left)
}

// TestFaultKillDuringApply: kill -9 of the agent while terraform applies, for
// a config with S3 state and one with local state.
//
// Expected: both end failed with the rescuer's "agent agent-1 lost during
// apply…" and are never applied again (attempt stays 1, nobody claims them).
// terraform dies with the agent; providers that outlive it are killed by
// agent-1 restarted on its data dir. What the dead terraform left is
// checked and reported:
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
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	s3cfg := e.config("applys3", `{"region": "eu-central-1", "tags": {"kill": "s3"}, "modules": {"vpc": {"nat_gateway": "none"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/applys3.tfstate", "region": "eu-central-1", "use_path_style": true}}`)
	localCfg := e.config("applylocal", fmt.Sprintf(vpcOnly, "kill-local"))
	a1 := e.startAgent("agent-1", "--concurrency", "2")
	ds := e.deploy(s3cfg, store.ActionApply)
	dl := e.deploy(localCfg, store.ActionApply)
	// Kill the agent once both applies are creating resources; the first
	// to get there is held until the other has.
	resume := e.holdRuns(a1, []uuid.UUID{ds.ID, dl.ID}, func(id uuid.UUID) bool { return e.logged(id, ": Creating...") }, 3*time.Minute)
	before := procsUnder(a1.dataDir)
	a1.kill()
	resume()
	for _, d := range []store.Deployment{ds, dl} {
		got, err := e.st.GetDeployment(e.ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, got.Status, "the apply ended before the kill")
	}
	left := survivors(t, a1.dataDir, before)

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
	statePath := a1.dataDir + "/state/e2e/" + localCfg.ID.String() + "/terraform.tfstate"
	info := readFile(t, a1.dataDir+"/state/e2e/"+localCfg.ID.String()+"/.terraform.tfstate.lock.info")
	require.Contains(t, info, `"Operation":"OperationTypeApply"`)
	t.Logf("local lock info left by the dead apply: %s", info)
	requireUnlocked(t, statePath)
	e.requireOrphansKilled(a1, left)
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
	e := newEnv(t, envOptions{ownPostgres: true})
	cfg := e.config("pgrestart", fmt.Sprintf(vpcOnly, "pg-restart"))
	a := e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionApply)
	e.waitPhase(d.ID, store.PhasePlan, 2*time.Minute)
	time.Sleep(time.Second)
	e.restartPostgres()
	e.waitPhase(d.ID, store.PhaseApply, 2*time.Minute)
	time.Sleep(2 * time.Second)
	e.restartPostgres()

	got := e.wait(d.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, got.Attempt)
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	var summary runner.PlanSummary
	require.NoError(t, json.Unmarshal(got.PlanSummary, &summary))
	require.Positive(t, summary.Add)
	requireApplyLog(t, lines, summary) // every resource's Creating… and Creation complete
	requireOrder(t, lines, "[agent] phase: render", "[agent] phase: commit", "[agent] phase: init", "[agent] phase: plan", "[agent] phase: apply", "[agent] phase: outputs", "[agent] succeeded")
	require.Equal(t, 1, e.vpcCount())
	require.True(t, a.alive())
	t.Logf("the agent rode out two restarts: %d failed heartbeats, %d retried outcome writes",
		len(a.records(t, "heartbeat failed")), len(a.records(t, "writing outcome failed; retrying")))
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
	e := newEnv(t, envOptions{ownPostgres: true})
	cfg := e.config("pgdown", `{"region": "eu-central-1", "modules": {}}`)
	d := e.deploy(cfg, store.ActionPlan)
	e.stopPostgres()
	a := e.startAgent("agent-1")
	// Wait until the second retry is announced.
	deadline := time.Now().Add(30 * time.Second * slack)
	for len(a.records(t, "database unreachable; retrying")) < 2 {
		require.True(t, a.alive(), "the agent exited instead of waiting for its database:\n%s", a.output())
		require.False(t, time.Now().After(deadline), "the agent does not say it retries:\n%s", a.output())
		time.Sleep(100 * time.Millisecond)
	}
	// The schedule is 1s, 2s, 4s… with 50% jitter (cmd/grape/connect.go), so
	// retry n waits within [d/2, d] for its nominal d.
	for i, rec := range a.records(t, "database unreachable; retrying")[:2] {
		require.Contains(t, fmt.Sprint(rec["err"]), "connect")
		wait, err := time.ParseDuration(fmt.Sprint(rec["retry_in"]))
		require.NoError(t, err, "retry_in of retry %d", i+1)
		nominal := time.Second << i
		require.True(t, wait >= nominal/2 && wait <= nominal,
			"retry %d waits %s, want within [%s, %s]", i+1, wait, nominal/2, nominal)
	}
	require.Empty(t, a.records(t, "agent started"))

	e.startPostgres()
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

// TestFaultGitRemoteDown: the audit repository's server goes away (a fault
// proxy in front of it closes its port and every connection) while a
// deployment wants to commit.
//
// Expected: the commit is retried for a bounded time (gitstore's
// NetworkRetry, 8 s) and the deployment ends failed with kind git before
// terraform starts: no init phase, nothing in moto, no commit on the remote.
// The agent keeps running. An outage shorter than the retries is ridden
// out: the next deployment, queued while the server is still down, commits
// once it is back and succeeds; the remote holds exactly that commit, fsck
// clean.
func TestFaultGitRemoteDown(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	proxy := testsupport.StartFaultProxy(t, hostOf(t, e.repo))
	e.repo = proxy.URL(e.repo)
	cfg := e.config("gitdown", fmt.Sprintf(vpcOnly, "git-down"))
	a := e.startAgent("agent-1")
	a.waitLog(t, `"msg":"agent started"`, time.Minute)

	proxy.Down()
	d := e.deploy(cfg, store.ActionApply)
	e.waitPhase(d.ID, store.PhaseCommit, time.Minute)
	t0 := time.Now()
	got := e.wait(d.ID, time.Minute, store.StatusFailed)
	took := time.Since(t0)
	t.Logf("commit gave up %s after the commit phase started: %s", took.Round(100*time.Millisecond), deref(got.Error))
	require.Equal(t, store.KindGit, deref(got.ErrorKind))
	require.Contains(t, deref(got.Error), "connection refused")
	require.Contains(t, deref(got.Error), "gave up after")
	require.Less(t, took, 30*time.Second, "retries are bounded")
	require.Greater(t, took, 4*time.Second, "it retried before giving up")
	require.Greater(t, len(a.records(t, "git remote unavailable; retrying")), 1)
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	require.Zero(t, countLines(lines, "phase: init"), "terraform must not start without a commit")
	require.Nil(t, got.CommitSHA)
	require.Zero(t, e.vpcCount())
	require.Empty(t, e.git("for-each-ref", "refs/heads/"), "nothing reached the remote")

	// A short outage is ridden out: the server comes back while the commit
	// is being retried, and the deployment goes on.
	retries := len(a.records(t, "git remote unavailable; retrying"))
	d2 := e.deploy(cfg, store.ActionPlan)
	for deadline := time.Now().Add(time.Minute * slack); len(a.records(t, "git remote unavailable; retrying")) == retries; {
		require.False(t, time.Now().After(deadline), "the agent never retried the commit:\n%s", a.output())
		time.Sleep(50 * time.Millisecond)
	}
	proxy.Up()
	ok := e.wait(d2.ID, 3*time.Minute, store.StatusSucceeded)
	require.True(t, a.alive())
	require.Equal(t, deref(ok.CommitSHA), e.git("rev-parse", "main"))
	require.Len(t, strings.Fields(e.git("rev-list", "main")), 1, "only the successful deployment's commit")
	require.Contains(t, e.git("log", "-1", "--format=%B", "main"), "Grape-Deployment: "+d2.ID.String())
	e.fsck()
}

// TestFaultDiskFull: the agent's disk fills up. The data dir is a small
// tmpfs and its runs/ dir (where each deployment's tree is checked out and
// terraform writes .terraform and the plan) a second, smaller one, so each
// can be filled on its own.
//
// Expected, run dir full: the rendering is committed (that disk has room)
// and the deployment fails at checkout, before terraform, saying the disk
// is full. Workspace full: the commit itself fails and nothing half-written
// remains — the agent's workspace and the remote pass git fsck, the remote
// tip has not moved. Neither applies anything, the agent keeps running, and
// once space is freed the next deployment succeeds.
func TestFaultDiskFull(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	dataDir := filepath.Join(t.TempDir(), "agent-1")
	mountTmpfs(t, dataDir, "32m")
	runs := filepath.Join(dataDir, "runs")
	mountTmpfs(t, runs, "4m")
	cfg := e.config("diskfull", fmt.Sprintf(vpcOnly, "disk-one"))
	a := e.startAgentAt("agent-1", dataDir)
	a.waitLog(t, `"msg":"agent started"`, time.Minute)

	// 1. The run dir is full.
	freeRuns := fillDisk(t, runs)
	d1 := e.deploy(cfg, store.ActionApply)
	got := e.wait(d1.ID, time.Minute, store.StatusFailed)
	t.Logf("run dir full: %s: %s", deref(got.ErrorKind), deref(got.Error))
	require.Equal(t, store.KindInternal, deref(got.ErrorKind))
	require.Regexp(t, `^the agent's disk is full \(writing .*/runs/`+d1.ID.String()+`/tree/\S+\) while checking out commit [0-9a-f]{12}: free space in the agent's --data-dir and queue the deployment again$`, deref(got.Error))
	lines := e.logs(d1.ID)
	requireGapless(t, lines)
	requireOrder(t, lines, "[agent] phase: commit", "[agent] committed ", "[agent] phase: checkout")
	require.Zero(t, countLines(lines, "phase: init"))
	require.Equal(t, deref(got.CommitSHA), e.git("rev-parse", "main"))
	e.fsck()
	freeRuns()

	// 2. The workspace's disk is full: the commit cannot be written.
	cfg = e.config("diskfull", fmt.Sprintf(vpcOnly, "disk-two"))
	tip := e.git("rev-parse", "main")
	freeData := fillDisk(t, dataDir)
	d2 := e.deploy(cfg, store.ActionApply)
	got = e.wait(d2.ID, time.Minute, store.StatusFailed)
	t.Logf("workspace full: %s: %s", deref(got.ErrorKind), deref(got.Error))
	require.Equal(t, store.KindInternal, deref(got.ErrorKind))
	require.Regexp(t, `^the agent's disk is full \(writing .*/workspace.git/\S+\) while committing the rendering: free space in the agent's --data-dir and queue the deployment again$`, deref(got.Error))
	lines = e.logs(d2.ID)
	requireGapless(t, lines)
	require.Zero(t, countLines(lines, "phase: checkout"))
	requireLine(t, lines, "no space left on device") // the detail is in the log
	if left, _ := filepath.Glob(filepath.Join(dataDir, "workspace.git", "objects", "pack", "tmp_obj_*")); len(left) > 0 {
		t.Logf("go-git left %d temporary object files behind (not objects, not corruption): %v", len(left), left)
	}
	require.Nil(t, got.CommitSHA)
	require.Equal(t, tip, e.git("rev-parse", "main"), "no commit reached the remote")
	fsck(t, filepath.Join(dataDir, "workspace.git"))
	freeData()

	// 3. Space is back: the agent runs the next deployment.
	require.True(t, a.alive())
	d3 := e.deploy(cfg, store.ActionPlan)
	ok := e.wait(d3.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, deref(ok.CommitSHA), e.git("rev-parse", "main"))
	e.fsck()
	fsck(t, filepath.Join(dataDir, "workspace.git"))
	require.Zero(t, e.vpcCount())
}

// TestFaultStateBackendDown: the S3 state backend becomes unreachable while
// terraform plans (a fault proxy in front of moto's S3 endpoint goes down
// once terraform holds the state lock; the provider's own API calls still
// reach moto, so only the backend is away). The proxy keeps moto — and the
// bucket, which moto holds only in memory — alive behind it, so what
// terraform left in the bucket can be checked when the backend returns.
//
// Expected: the deployment fails with terraform's error (kind plan).
// terraform could not delete its lock object, and it is still there when the
// backend is back. The next deployment must not stay blocked by it: the
// agent recognises the plan lock its earlier deployment left (created while
// that one ran, which ended without releasing it), releases it with
// terraform force-unlock, and the plan succeeds. No lock is left after that.
func TestFaultStateBackendDown(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	proxy := testsupport.StartFaultProxy(t, hostOf(t, e.moto.URL))
	cfg := e.config("backenddown", fmt.Sprintf(`{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "none"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/backenddown.tfstate", "region": "eu-central-1", "use_path_style": true, "endpoint": %q}}`, "http://"+proxy.Addr))
	a := e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionPlan)
	e.waitPhase(d.ID, store.PhasePlan, 2*time.Minute)
	const lockKey = "e2e/backenddown.tfstate.tflock"
	e.waitObject("grape-state", lockKey, time.Minute)
	proxy.Down()
	got := e.wait(d.ID, 2*time.Minute, store.StatusFailed)
	t.Logf("backend down: %s: %s", deref(got.ErrorKind), deref(got.Error))
	require.Equal(t, store.KindPlan, deref(got.ErrorKind))
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	requireLine(t, lines, "connection refused")
	// Where terraform was when the backend went away decides what it says:
	// after reading the state, the unlock fails and terraform reports it;
	// before, reading the state fails and terraform 1.11 drops the unlock's
	// error ("Releasing state lock..." and nothing more). The lock stays
	// either way.
	if strings.Contains(deref(got.Error), runner.LockNotReleased) {
		requireLine(t, lines, "Error releasing the state lock")
		requireLine(t, lines, "the state lock may still be held: the next deployment of this config releases it")
	} else {
		requireLine(t, lines, "error loading state")
		requireLine(t, lines, "Releasing state lock.")
	}

	proxy.Up()
	var lock struct{ ID, Operation string }
	require.NoError(t, json.Unmarshal([]byte(e.awsObject("grape-state", lockKey)), &lock), "terraform left its lock object")
	require.Equal(t, "OperationTypePlan", lock.Operation)
	next := e.deploy(cfg, store.ActionPlan)
	e.wait(next.ID, 2*time.Minute, store.StatusSucceeded)
	nextLines := e.logs(next.ID)
	requireGapless(t, nextLines)
	requireOrder(t, nextLines,
		fmt.Sprintf("[agent] the state lock %s (OperationTypePlan by ", lock.ID),
		fmt.Sprintf("was left by deployment %s, ", d.ID), "; that plan has ended and a plan lock guards no write: releasing it",
		"[agent] terraform force-unlock -force "+lock.ID,
		"[agent] terraform plan", "[agent] succeeded")
	require.False(t, e.objectExists("grape-state", lockKey), "no lock is left")
	require.True(t, a.alive())
}

// TestFaultRacingAgentsWithKills: two agents of one cluster work through 20
// plan-only deployments of four configs (no modules: a plan takes seconds),
// while one of them is killed -9 whenever it holds a deployment and
// restarted on its data dir, again and again.
//
// Expected: no deployment is ever claimed twice at once — every (deployment,
// attempt) is claimed by exactly one agent process, seen both in the agents'
// own logs (or, for a process killed before it could log its claim, in its
// rescuer's note) and by sampling the table, and no config ever has two runs in
// progress; none is stuck — within a bound every one ends succeeded, or
// failed with the reason stated (its attempts used up by kills). Every log
// is gapless and tells each attempt's story in order, and the audit
// repository is fsck clean.
func TestFaultRacingAgentsWithKills(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	var cfgs []store.Config
	for _, n := range []string{"race-a", "race-b", "race-c", "race-d"} {
		cfgs = append(cfgs, e.config(n, fmt.Sprintf(`{"region": "eu-central-1", "tags": {"config": %q}, "modules": {}}`, n)))
	}
	var ds []store.Deployment
	for i := 0; i < 20; i++ {
		ds = append(ds, e.deploy(cfgs[i%len(cfgs)], store.ActionPlan))
	}
	fast := []string{"--lease", "5s", "--concurrency", "2"}
	steady := e.startAgent("agent-a", fast...)
	victimDir := filepath.Join(t.TempDir(), "agent-b")
	victims := []*agent{e.startAgentAt("agent-b", victimDir, fast...)}

	// Sample the table while the agents race.
	stop := make(chan struct{})
	sampled := make(chan raceSample, 1)
	go func() { sampled <- e.sampleClaims(stop) }()

	// Kill the victim each time it has claimed work, at a different point
	// of the run each time, then restart it; after maxKills, let it be.
	const maxKills = 4
	deadline := time.Now().Add(4 * time.Minute * slack)
	kills := 0
	for !e.allFinal(ds) {
		require.False(t, time.Now().After(deadline), "deployments still not finished after 12 minutes:\n%s", e.statusTable(ds))
		victim := victims[len(victims)-1]
		if kills == maxKills || len(victim.records(t, "deployment claimed")) == 0 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		time.Sleep(time.Duration(kills%4) * 700 * time.Millisecond)
		victim.kill()
		kills++
		time.Sleep(500 * time.Millisecond)
		victims = append(victims, e.startAgentAt("agent-b", victimDir, fast...))
	}
	close(stop)
	sample := <-sampled
	t.Logf("%d kills of agent-b; %d samples of the table, up to %d deployments in progress at once", kills, sample.samples, sample.maxInProgress)
	// Every kill found the victim holding work; on a slow machine the steady
	// agent may drain the queue before the fourth.
	require.GreaterOrEqual(t, kills, 2, "the victim must have been killed holding work, again and again")
	require.Empty(t, sample.violations)

	// Every claim, from every agent process's own log: (deployment, attempt)
	// claimed exactly once.
	claims := map[string]string{}
	for _, a := range append([]*agent{steady}, victims...) {
		for _, rec := range a.records(t, "deployment claimed") {
			key := fmt.Sprintf("%v attempt %v", rec["deployment_id"], rec["attempt"])
			require.Empty(t, claims[key], "%s claimed by %s and again by %s", key, claims[key], rec["agent_id"])
			claims[key] = fmt.Sprint(rec["agent_id"])
		}
	}

	requeued, exhausted := 0, 0
	for _, d := range ds {
		got, err := e.st.GetDeployment(e.ctx, d.ID)
		require.NoError(t, err)
		lines := e.logs(d.ID)
		requireGapless(t, lines)
		// Each attempt was claimed once (in the agents' logs) and starts
		// its own story in the deployment's log, after the previous one
		// was taken back.
		for n := 1; n <= got.Attempt; n++ {
			if claims[fmt.Sprintf("%s attempt %d", d.ID, n)] != "" {
				continue
			}
			// A process killed between committing its claim and writing
			// its "deployment claimed" line leaves no line; the claim is
			// in the row, and the rescuer says it found it there.
			requireLine(t, lines, fmt.Sprintf("agent agent-b lost during claimed on attempt %d of ", n))
		}
		require.Empty(t, claims[fmt.Sprintf("%s attempt %d", d.ID, got.Attempt+1)])
		// A killed agent loses the lines it had not flushed yet (at most
		// its last FlushInterval, 200 ms), so an attempt killed right after
		// its claim may miss its first line; the rescuer's line is written
		// with its decision and is always there.
		starts := countAgentPrefix(lines, "claimed by agent ") + countAgentPrefix(lines, "attempt ")
		require.LessOrEqual(t, starts, got.Attempt, "claims in the log of %s:\n%s", d.ID, joinLines(lines))
		require.Positive(t, starts)
		require.Equal(t, got.Attempt-1, countLines(lines, "; requeued"), "rescues in the log of %s:\n%s", d.ID, joinLines(lines))
		switch got.Status {
		case store.StatusSucceeded:
			require.Equal(t, "succeeded", lines[len(lines)-1].Line)
		case store.StatusFailed:
			// Only kills may fail these plans, and only once they used every attempt.
			require.Equal(t, store.KindAgentLost, deref(got.ErrorKind))
			require.Equal(t, got.MaxAttempts, got.Attempt)
			require.Contains(t, deref(got.Error), "no attempts left")
			exhausted++
		default:
			t.Fatalf("deployment %s ended %s", d.ID, got.Status)
		}
		if got.Attempt > 1 {
			requeued++
		}
	}
	t.Logf("%d of %d deployments were taken back from a killed agent and run again; %d used up their attempts", requeued, len(ds), exhausted)
	require.Positive(t, requeued)
	e.fsck()
}

// raceSample is what sampleClaims saw.
type raceSample struct {
	samples, maxInProgress int
	violations             []string
}

// sampleClaims reads the in-progress deployments every 50 ms until stop:
// at most one per config, and a deployment's attempt is only ever claimed by
// one agent and never goes back.
func (e *env) sampleClaims(stop <-chan struct{}) raceSample {
	var s raceSample
	owner := map[string]string{} // "id attempt" → agent
	last := map[string]int{}     // id → highest attempt seen
	for {
		select {
		case <-stop:
			return s
		case <-time.After(50 * time.Millisecond):
		}
		rows, err := e.pool.Query(e.ctx, `SELECT id::text, config_id::text, attempt, claimed_by FROM deployments WHERE status = 'in_progress'`)
		if err != nil {
			s.violations = append(s.violations, "query: "+err.Error())
			return s
		}
		perConfig := map[string]int{}
		n := 0
		for rows.Next() {
			var id, cfg, by string
			var attempt int
			if err := rows.Scan(&id, &cfg, &attempt, &by); err != nil {
				s.violations = append(s.violations, "scan: "+err.Error())
				break
			}
			n++
			perConfig[cfg]++
			key := fmt.Sprintf("%s %d", id, attempt)
			if o, seen := owner[key]; seen && o != by {
				s.violations = append(s.violations, fmt.Sprintf("%s held by %s and by %s", key, o, by))
			}
			owner[key] = by
			if attempt < last[id] {
				s.violations = append(s.violations, fmt.Sprintf("%s went back from attempt %d to %d", id, last[id], attempt))
			}
			last[id] = max(last[id], attempt)
		}
		rows.Close()
		for cfg, k := range perConfig {
			if k > 1 {
				s.violations = append(s.violations, fmt.Sprintf("config %s had %d deployments in progress", cfg, k))
			}
		}
		s.samples++
		s.maxInProgress = max(s.maxInProgress, n)
	}
}

func (e *env) allFinal(ds []store.Deployment) bool {
	e.t.Helper()
	for _, d := range ds {
		got, err := e.st.GetDeployment(e.ctx, d.ID)
		require.NoError(e.t, err)
		if !got.Status.Final() {
			return false
		}
	}
	return true
}

func (e *env) statusTable(ds []store.Deployment) string {
	var b strings.Builder
	for _, d := range ds {
		got, err := e.st.GetDeployment(e.ctx, d.ID)
		if err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "%s %s %s attempt %d by %s: %s\n", got.ID, got.Status, got.PhaseName(), got.Attempt, deref(got.ClaimedBy), deref(got.Error))
	}
	return b.String()
}
