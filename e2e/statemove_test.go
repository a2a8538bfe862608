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

	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// TestStateMoveToAnotherAgent: a VPC applied on agent-a; `grape state move`
// is refused to an agent without --state-handoff-addr, then hands the state
// (agent to agent, never through the database) to agent-b; agent-a stops;
// the next apply runs on agent-b and plans no changes: still one VPC. The
// state file left agent-a's live path; its copy is kept under state-moved/.
func TestStateMoveToAnotherAgent(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	cfg := e.config("moved", fmt.Sprintf(vpcOnly, "v1"))
	dirA, dirB := filepath.Join(t.TempDir(), "agent-a"), filepath.Join(t.TempDir(), "agent-b")
	a := e.startAgentAt("agent-a", dirA)
	first := e.deploy(cfg, store.ActionApply)
	e.wait(first.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, e.vpcCount())
	liveA := filepath.Join(dirA, "state", e.cluster, cfg.ID.String(), "terraform.tfstate")
	stateA, err := os.ReadFile(liveA)
	require.NoError(t, err)

	// agent-b without --state-handoff-addr cannot receive: refused at once.
	b := e.startAgentAt("agent-b", dirB)
	b.waitLog(t, "each such config runs only on the agent holding its state", 2*time.Minute)
	_, stderr, err := e.grapeResult("state", "move", "--cluster", e.cluster, "--config", "moved", "--to-agent", "agent-b")
	require.Error(t, err)
	require.Contains(t, stderr, "agent agent-b was not started with --state-handoff-addr HOST:PORT")
	b.stop(t)

	// Restarted with it, agent-b receives the state.
	e.startAgentAt("agent-b", dirB, "--state-handoff-addr", "127.0.0.1:0")
	var out string
	deadline := time.Now().Add(time.Minute * slack)
	for {
		stdout, stderr, err := e.grapeResult("state", "move", "--cluster", e.cluster, "--config", "moved", "--to-agent", "agent-b", "--reason", "new machine", "--as", "carol@ops")
		if err == nil {
			out = stdout
			t.Logf("grape state move:\n%s%s", stderr, stdout)
			break
		}
		// The restarted agent registers, then records its handoff address.
		require.True(t, strings.Contains(stderr, "agent agent-b is offline") || strings.Contains(stderr, "was not started with --state-handoff-addr"), stderr)
		require.False(t, time.Now().After(deadline), "agent-b never recorded its --state-handoff-addr: %s", stderr)
		time.Sleep(200 * time.Millisecond)
	}
	require.Contains(t, out, "agent agent-b holds the state of moved now")
	h, err := e.st.StateHolderOf(e.ctx, cfg.ID)
	require.NoError(t, err)
	require.Equal(t, "agent-b", h.AgentID)
	got, err := os.ReadFile(filepath.Join(dirB, "state", e.cluster, cfg.ID.String(), "terraform.tfstate"))
	require.NoError(t, err)
	require.Equal(t, stateA, got, "agent-b has the state byte for byte")
	// agent-a's copy left the live path once the database said done.
	a.waitLog(t, "moved the state: agent agent-b holds it now", time.Minute)
	_, err = os.Stat(liveA)
	require.True(t, os.IsNotExist(err), "the state file is no longer in agent-a's live path")
	kept, err := filepath.Glob(filepath.Join(dirA, "state-moved", e.cluster, cfg.ID.String(), "*-moved-to-agent-b", "terraform.tfstate"))
	require.NoError(t, err)
	require.Len(t, kept, 1, "agent-a keeps its copy where docs/operations.md says")
	// The database carried metadata only.
	var rows string
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT jsonb_agg(to_jsonb(m))::text FROM state_moves m`).Scan(&rows))
	require.NotContains(t, rows, `"lineage"`)
	require.NotContains(t, rows, "vpc-")
	audit := e.grape("audit", "--cluster", e.cluster)
	require.Contains(t, audit, "state.move_requested")
	require.Contains(t, audit, "state.moved")
	require.Contains(t, e.grape("state", "moves", "--cluster", e.cluster), "done")

	// The old holder goes away; the config's next apply runs on agent-b
	// and finds everything in place.
	a.stop(t)
	next := e.deploy(cfg, store.ActionApply)
	done := e.wait(next.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, "agent-b", deref(done.ClaimedBy))
	var plan runner.PlanSummary
	require.NoError(t, json.Unmarshal(done.PlanSummary, &plan))
	require.Zero(t, plan.Add, "nothing created on the new holder")
	require.Zero(t, plan.Destroy)
	requireLine(t, e.logs(next.ID), "no changes: nothing to apply")
	require.NotContains(t, e.logText(next.ID), "Creating...")
	require.Equal(t, 1, e.vpcCount(), "still one VPC")
}

// TestBackendMigrationLocalToS3: a VPC applied with the local backend; the
// intent moves it to S3 with --migrate-backend; the queued apply runs on the
// agent holding the state, which migrates it with terraform's own
// init -migrate-state (in its log and its audit commit) and plans no
// changes: still one VPC, the state now in the bucket, the agent no longer
// its holder, its local copy out of the live path.
func TestBackendMigrationLocalToS3(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	cfg := e.config("migrated", fmt.Sprintf(vpcOnly, "v1"))
	dir := filepath.Join(t.TempDir(), "agent-1")
	e.startAgentAt("agent-1", dir)
	first := e.deploy(cfg, store.ActionApply)
	e.wait(first.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, e.vpcCount())

	s3Intent := `{"region": "eu-central-1", "tags": {"step": "v1"}, "modules": {"vpc": {"nat_gateway": "none"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/migrated.tfstate", "region": "eu-central-1", "use_path_style": true}}`
	path := filepath.Join(t.TempDir(), "s3.json")
	require.NoError(t, os.WriteFile(path, []byte(s3Intent), 0o644))
	// Without the flag: refused, naming the commands.
	_, stderr, err := e.grapeResult("config", "apply", "--cluster", e.cluster, "--name", "migrated", "-f", path)
	require.Error(t, err)
	require.Contains(t, stderr, "aws s3 cp ")
	require.Contains(t, stderr, "--migrate-backend")

	_, stderr, err = e.grapeResult("config", "apply", "--cluster", e.cluster, "--name", "migrated", "-f", path, "--migrate-backend", "--as", "dan@ops")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "agent agent-1, which holds its state, migrates the state to s3 backend s3://grape-state/e2e/migrated.tfstate")
	ds, err := e.st.ListDeployments(e.ctx, store.ListFilter{ClusterID: e.cluster, ConfigID: &cfg.ID})
	require.NoError(t, err)
	var mig store.Deployment
	for _, d := range ds {
		if d.MigrateState {
			mig = d
		}
	}
	require.True(t, mig.MigrateState, "a migrating deployment was queued")
	done := e.wait(mig.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, "agent-1", deref(done.ClaimedBy))
	logs := e.logs(mig.ID)
	requireLine(t, logs, "terraform init -migrate-state -force-copy")
	requireLine(t, logs, "migrated the state of migrated to s3 backend s3://grape-state/e2e/migrated.tfstate")
	requireLine(t, logs, "no changes: nothing to apply")
	var plan runner.PlanSummary
	require.NoError(t, json.Unmarshal(done.PlanSummary, &plan))
	require.Zero(t, plan.Add)
	require.Zero(t, plan.Destroy)
	require.Equal(t, 1, e.vpcCount(), "still one VPC")
	e.aws("s3api", "head-object", "--bucket", "grape-state", "--key", "e2e/migrated.tfstate")
	_, err = os.Stat(filepath.Join(dir, "state", e.cluster, cfg.ID.String(), "terraform.tfstate"))
	require.True(t, os.IsNotExist(err), "the local state left the live path")
	_, err = e.st.StateHolderOf(e.ctx, cfg.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "a state in S3 is any agent's")
	require.Contains(t, e.git("log", "-1", "--format=%B", deref(done.CommitSHA)), "Grape-State-Migration: local state on agent agent-1 → s3 backend s3://grape-state/e2e/migrated.tfstate")
	audit := e.grape("audit", "--cluster", e.cluster)
	require.Contains(t, audit, "state.backend_migration_queued")
	require.Contains(t, audit, "state.backend_migrated")
}
