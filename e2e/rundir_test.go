package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// rdsIntent has the template's sensitive input (the database password,
// TF_VAR_rds_master_password on the agent), so every run writes
// secret.tfvars.json into its run dir. backend is the intent's backend.
func rdsIntent(backend string) string {
	return `{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "none"},
  "rds": {"identifier": "canary-db", "deletion_protection": false, "skip_final_snapshot": true}}` + backend + `}`
}

// requireNotUnder fails if any file under dir holds secret, and if a run
// dir is left over.
func requireNotUnder(t *testing.T, dir, secret string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("the secret is in %s", path)
		}
		return nil
	})
	require.NoError(t, err)
	runs, err := os.ReadDir(filepath.Join(dir, "runs"))
	if !os.IsNotExist(err) {
		require.NoError(t, err)
		require.Empty(t, runs, "run dirs left under %s", dir)
	}
}

// TestRunDirsLeaveNoSecret: a failed, a cancelled and a timed-out run each
// remove their run dir, and the secret var file with it: the canary value
// of a sensitive TF_VAR is nowhere under the agent's data dir afterwards.
func TestRunDirsLeaveNoSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	canary := "canary-run-dir-" + uuid.NewString()
	e.agentEnv["TF_VAR_rds_master_password"] = canary

	dir := filepath.Join(t.TempDir(), "agent-1")
	a := e.startAgentAt("agent-1", dir)
	// Failed: init cannot reach a state bucket that does not exist.
	failing := e.config("failing", rdsIntent(`, "backend": {"type": "s3", "bucket": "no-such-bucket", "key": "x.tfstate", "region": "eu-central-1", "use_path_style": true}`))
	d := e.deploy(failing, store.ActionPlan)
	got := e.wait(d.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindInit, deref(got.ErrorKind), deref(got.Error))
	requireNotUnder(t, dir, canary)

	// Cancelled during plan.
	cancelled := e.config("cancelled", rdsIntent(""))
	d = e.deploy(cancelled, store.ActionPlan)
	e.waitPhase(d.ID, store.PhasePlan, 3*time.Minute)
	e.grape("cancel", d.ID.String())
	e.wait(d.ID, 2*time.Minute, store.StatusCancelled)
	requireNotUnder(t, dir, canary)
	a.stop(t)

	// Timed out during plan (a plan of this stack takes seconds).
	dir2 := filepath.Join(t.TempDir(), "agent-2")
	e.startAgentAt("agent-2", dir2, "--timeout-plan", "1s")
	d = e.deploy(cancelled, store.ActionPlan)
	got = e.wait(d.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindTimeout, deref(got.ErrorKind), deref(got.Error))
	requireNotUnder(t, dir2, canary)
	requireNotUnder(t, dir, canary)
}
