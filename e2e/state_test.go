package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// The scenarios of docs/operations.md, "Where state lives": each ordinary
// operator action that used to create a config's infrastructure a second
// time, orphan it or roll it back ends with the VPC count unchanged and a
// status that says why.

// TestStateAffinityAcrossAgentsAndRename: a second agent of the cluster never
// takes a local-state config (it would plan from its own empty data dir);
// while the holder is offline the config's deployments wait in queued with
// the reason, other configs still run on the second agent; renaming the
// config moves nothing (its next apply updates the grape:config tag in place:
// nothing created, nothing destroyed); the holder, restarted on the same
// data dir, runs it.
func TestStateAffinityAcrossAgentsAndRename(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	held := e.config("held", fmt.Sprintf(vpcOnly, "held"))
	other := e.config("other", fmt.Sprintf(vpcOnly, "other"))
	dataDir := filepath.Join(t.TempDir(), "agent-1")
	a1 := e.startAgentAt("agent-1", dataDir)

	first := e.deploy(held, store.ActionApply)
	e.wait(first.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, e.vpcCount())
	h, err := e.st.StateHolderOf(e.ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, "agent-1", h.AgentID)
	_, err = os.Stat(filepath.Join(dataDir, "state", e.cluster, held.ID.String(), "terraform.tfstate"))
	require.NoError(t, err, "local state is keyed by the config's id")

	// A second agent joins and warns; then the holder stops.
	a2 := e.startAgent("agent-2")
	a2.waitLog(t, "each such config runs only on the agent holding its state", 2*time.Minute)
	a1.stop(t)

	again := e.deploy(held, store.ActionApply)
	otherPlan := e.deploy(other, store.ActionPlan)
	e.wait(otherPlan.ID, 4*time.Minute, store.StatusSucceeded)
	got, err := e.st.GetDeployment(e.ctx, otherPlan.ID)
	require.NoError(t, err)
	require.Equal(t, "agent-2", deref(got.ClaimedBy), "other configs flow to any agent")
	got, err = e.st.GetDeployment(e.ctx, again.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, got.Status, "agent-2 must not take the held config")
	status := e.grape("status", again.ID.String())
	require.Contains(t, status, "waiting for agent agent-1, which holds this config's state; last seen ")
	require.Contains(t, status, "stopped)")
	require.Contains(t, e.grape("status", "--cluster", e.cluster), "waiting for agent agent-1")

	// A rename while it waits: nothing moves in the cloud, and it is audited.
	require.Contains(t, e.grape("config", "rename", "--cluster", e.cluster, "held", "renamed"), "is now renamed")
	audit := e.grape("audit", "--cluster", e.cluster)
	require.Contains(t, audit, "config.renamed")
	require.Contains(t, audit, `"from": "held"`)

	// The holder comes back on the same data dir and takes it: no changes.
	e.startAgentAt("agent-1", dataDir)
	done := e.wait(again.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, "agent-1", deref(done.ClaimedBy))
	// The only change a rename makes is the grape:config tag, in place.
	var plan runner.PlanSummary
	require.NoError(t, json.Unmarshal(done.PlanSummary, &plan))
	require.Zero(t, plan.Add, "a rename creates nothing")
	require.Zero(t, plan.Destroy, "a rename destroys nothing")
	require.Equal(t, 1, e.vpcCount(), "no second VPC")
	require.NotContains(t, e.logText(again.ID), "Creating...")
}

// TestStateGuards: a region change of an applied config is refused; a
// database restored from before the last deployment fails
// control_plane_behind before anything is planned; an out-of-band destroy is
// refused as state_missing until a person accepts the empty state, once and
// on the record, after which the stack exists once.
func TestStateGuards(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	v1 := fmt.Sprintf(vpcOnly, "v1")
	cfg := e.config("guarded", v1)
	e.startAgent("agent-1")
	d := e.deploy(cfg, store.ActionApply)
	e.wait(d.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, e.vpcCount())

	// Region: refused with the way out; nothing stored, nothing queued.
	path := filepath.Join(t.TempDir(), "west.json")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(v1, region, "eu-west-1", 1)), 0o644))
	_, stderr, err := e.grapeResult("config", "apply", "--cluster", e.cluster, "--name", "guarded", "-f", path)
	require.Error(t, err)
	require.Contains(t, stderr, "region eu-central-1 → eu-west-1 would create the stack again")
	require.Contains(t, stderr, "--replace-stack")
	now, err := e.st.GetConfigByID(e.ctx, cfg.ID)
	require.NoError(t, err)
	require.Equal(t, 1, now.Version)

	// v2 is deployed; then the database is "restored" from before it.
	cfg2 := e.config("guarded", fmt.Sprintf(vpcOnly, "v2"))
	require.Equal(t, 2, cfg2.Version)
	d2 := e.deploy(cfg2, store.ActionApply)
	e.wait(d2.ID, 4*time.Minute, store.StatusSucceeded)
	v2commit := deref(mustDeployment(t, e, d2.ID).CommitSHA)
	restoreSnapshotBefore(t, e, cfg.ID, d2.ID, v1)

	behind := e.deploy(cfg, store.ActionApply)
	failed := e.wait(behind.ID, 2*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindControlPlaneBehind, deref(failed.ErrorKind))
	msg := deref(failed.Error)
	require.Contains(t, msg, "would deploy v1 of config guarded")
	require.Contains(t, msg, "deployed v2")
	require.Contains(t, msg, v2commit[:12])
	require.Contains(t, msg, "--accept-rollback")
	require.Nil(t, failed.CommitSHA, "nothing was rendered or committed")
	require.NotContains(t, e.logText(behind.ID), "terraform plan")

	// The rollback on purpose: recorded with who asked.
	id := e.grape("deploy", "--cluster", e.cluster, "--config", "guarded", "--accept-rollback", "--as", "bob@ops")
	rolled := e.wait(mustUUID(id), 4*time.Minute, store.StatusSucceeded)
	require.True(t, rolled.AcceptRollback)
	require.Equal(t, "bob@ops", rolled.RequestedBy)
	requireLine(t, e.logs(rolled.ID), "going on because bob@ops accepted the rollback")
	require.Equal(t, 1, e.vpcCount())

	// Out-of-band destroy: moto forgets everything.
	resp, err := http.Post(e.moto.URL+"/moto-api/reset", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Zero(t, e.vpcCount())
	missing := e.deploy(cfg, store.ActionApply)
	refused := e.wait(missing.ID, 4*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindStateMissing, deref(refused.ErrorKind))
	require.Contains(t, deref(refused.Error), "found an empty state at local state ")
	require.Contains(t, deref(refused.Error), "/state/e2e/"+cfg.ID.String()+"/terraform.tfstate on agent agent-1")
	require.Contains(t, deref(refused.Error), "--accept-empty-state")
	require.Zero(t, e.vpcCount(), "nothing was applied")

	id = e.grape("deploy", "--cluster", e.cluster, "--config", "guarded", "--accept-empty-state", "--as", "alice@ops")
	recreated := e.wait(mustUUID(id), 4*time.Minute, store.StatusSucceeded)
	require.True(t, recreated.AcceptEmptyState)
	require.Equal(t, "alice@ops", recreated.RequestedBy)
	require.Contains(t, e.grape("status", id), "accept empty state (requested by alice@ops)")
	require.Equal(t, 1, e.vpcCount())
	// Once: the override belonged to that deployment alone.
	next := e.deploy(cfg, store.ActionApply)
	e.wait(next.ID, 4*time.Minute, store.StatusSucceeded)
	requireLine(t, e.logs(next.ID), "no changes: nothing to apply")
	require.Equal(t, 1, e.vpcCount())

	// The state versions the agent kept, and a restore recorded in the audit log.
	a := e.agents[0]
	list := e.grape("state", "list", "--cluster", e.cluster, "--config", "guarded", "--data-dir", a.dataDir)
	require.Contains(t, list, "current")
	require.Contains(t, list, "before apply of deployment "+recreated.ID.String())
}

// restoreSnapshotBefore makes the database look as if restored from a
// snapshot taken before deployment after: the config back at version v1
// with spec, later versions and deployments gone. Triggers are off for it,
// as they are while pg_restore loads a dump.
func restoreSnapshotBefore(t *testing.T, e *env, configID, after uuid.UUID, spec string) {
	t.Helper()
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(e.ctx) }()
	for _, q := range []string{
		`SET LOCAL session_replication_role = replica`,
		`DELETE FROM deployments WHERE config_id = '` + configID.String() + `' AND created_at >= (SELECT created_at FROM deployments WHERE id = '` + after.String() + `')`,
		`DELETE FROM config_versions WHERE config_id = '` + configID.String() + `' AND version > 1`,
	} {
		_, err := tx.Exec(e.ctx, q)
		require.NoError(t, err, q)
	}
	_, err = tx.Exec(e.ctx, `UPDATE configs SET version = 1, spec = $2 WHERE id = $1`, configID.String(), spec)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
}

func mustDeployment(t *testing.T, e *env, id uuid.UUID) store.Deployment {
	t.Helper()
	d, err := e.st.GetDeployment(e.ctx, id)
	require.NoError(t, err)
	return d
}
