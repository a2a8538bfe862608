package localstate_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localstate"
)

const cluster, cfgID = "eu-1", "0b6f8a4e-6d5c-4a8e-9d3c-1f2e3d4c5b6a"

func state(serial int, resources ...string) []byte {
	var rs []string
	for _, r := range resources {
		rs = append(rs, fmt.Sprintf(`{"mode":"managed","type":"terraform_data","name":%q,"instances":[{"attributes":{}}]}`, r))
	}
	rs = append(rs, `{"mode":"data","type":"terraform_remote_state","name":"x","instances":[{}]}`)
	return fmt.Appendf(nil, `{"version":4,"serial":%d,"lineage":"l-1","resources":[%s]}`, serial, strings.Join(rs, ","))
}

func writeState(t *testing.T, d localstate.Dir, b []byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(d.ConfigDir(cluster, cfgID), 0o700))
	require.NoError(t, os.WriteFile(d.Path(cluster, cfgID), b, 0o600))
}

func TestAdopt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		legacy     bool // a name-keyed dir with a state exists
		idDir      bool // the id-keyed dir exists already
		mayAdopt   bool
		wantMoved  bool
		wantFrom   bool
		wantLegacy bool // the name-keyed dir is still there afterwards
	}{
		{"fresh config", false, false, true, false, false, false},
		{"old agent's state is moved", true, false, true, true, true, false},
		{"not applied: another config's old state is left alone", true, false, false, false, true, true},
		{"already adopted", true, true, true, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := localstate.Dir{DataDir: t.TempDir()}
			legacy := filepath.Join(d.DataDir, "state", cluster, "prod")
			if tc.legacy {
				require.NoError(t, os.MkdirAll(legacy, 0o700))
				require.NoError(t, os.WriteFile(filepath.Join(legacy, localstate.StateFile), state(3, "a"), 0o600))
			}
			if tc.idDir {
				require.NoError(t, os.MkdirAll(d.ConfigDir(cluster, cfgID), 0o700))
			}
			a, err := d.Adopt(cluster, cfgID, "prod", tc.mayAdopt)
			require.NoError(t, err)
			require.Equal(t, tc.wantMoved, a.Moved)
			require.Equal(t, tc.wantFrom, a.From != "")
			_, err = os.Stat(legacy)
			require.Equal(t, tc.wantLegacy, err == nil)
			if tc.wantMoved {
				b, err := os.ReadFile(d.Path(cluster, cfgID))
				require.NoError(t, err)
				require.Equal(t, state(3, "a"), b)
			}
		})
	}
}

func TestSnapshotKeepsTheNewestTen(t *testing.T) {
	t.Parallel()
	d := localstate.Dir{DataDir: t.TempDir()}
	_, ok, err := d.Snapshot(cluster, cfgID, "before apply", time.Now())
	require.NoError(t, err)
	require.False(t, ok, "no state yet: nothing to keep")

	t0 := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	for i := 1; i <= 13; i++ {
		writeState(t, d, state(i, "a", "b"))
		v, ok, err := d.Snapshot(cluster, cfgID, fmt.Sprintf("before apply of deployment d-%d", i), t0.Add(time.Duration(i)*time.Minute))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, uint64(i), v.Serial)
	}
	vs, err := d.List(cluster, cfgID)
	require.NoError(t, err)
	require.Len(t, vs, 1+localstate.Keep)
	require.Equal(t, localstate.Current, vs[0].Name)
	require.Equal(t, uint64(13), vs[1].Serial, "newest first")
	require.Equal(t, uint64(4), vs[len(vs)-1].Serial, "the oldest three were pruned")
	require.Equal(t, t0.Add(13*time.Minute), vs[1].Time)
	require.Equal(t, "before apply of deployment d-13", vs[1].Reason)
	require.Equal(t, 2, vs[1].Resources, "managed resources only")
	require.Equal(t, "l-1", vs[1].Lineage)
	for _, v := range vs[1:] {
		info, err := os.Stat(filepath.Join(d.ConfigDir(cluster, cfgID), "backups", v.Name+".tfstate"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "state holds secrets")
	}
}

func TestRestore(t *testing.T) {
	t.Parallel()
	d := localstate.Dir{DataDir: t.TempDir()}
	writeState(t, d, state(1, "a", "b", "c"))
	old, _, err := d.Snapshot(cluster, cfgID, "before apply", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	writeState(t, d, state(2)) // a bad apply emptied it

	_, _, err = d.Restore(cluster, cfgID, "nope", time.Now())
	require.ErrorContains(t, err, "grape state list")
	_, _, err = d.Restore(cluster, cfgID, "../../etc/passwd", time.Now())
	require.Error(t, err)

	restored, saved, err := d.Restore(cluster, cfgID, old.Name, time.Now())
	require.NoError(t, err)
	require.Equal(t, 3, restored.Resources)
	require.Equal(t, uint64(2), saved.Serial, "the replaced state is kept, so the restore can be undone")
	b, err := os.ReadFile(d.Path(cluster, cfgID))
	require.NoError(t, err)
	require.Equal(t, state(1, "a", "b", "c"), b)
}

// TestRestoreRefusedWhileTerraformRuns holds the state lock with a real
// terraform apply (a provisioner that waits) and checks that a restore is
// refused, then allowed once terraform is gone.
func TestRestoreRefusedWhileTerraformRuns(t *testing.T) {
	t.Parallel()
	tf := testsupport.TerraformBinary(t)
	d := localstate.Dir{DataDir: t.TempDir()}
	writeState(t, d, state(1, "a"))
	v, _, err := d.Snapshot(cluster, cfgID, "before apply", time.Now())
	require.NoError(t, err)
	require.NoError(t, os.Remove(d.Path(cluster, cfgID)))

	root := t.TempDir()
	fifo := filepath.Join(root, "release")
	require.NoError(t, exec.Command("mkfifo", fifo).Run())
	main := fmt.Sprintf(`terraform {
  backend "local" {}
}
resource "terraform_data" "wait" {
  provisioner "local-exec" {
    command = "echo holding; cat %s"
  }
}
`, fifo)
	require.NoError(t, os.WriteFile(filepath.Join(root, "main.tf"), []byte(main), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initCmd := exec.CommandContext(ctx, tf, "init", "-input=false", "-no-color", "-backend-config=path="+d.Path(cluster, cfgID))
	initCmd.Dir = root
	out, err := initCmd.CombinedOutput()
	require.NoError(t, err, string(out))

	apply := exec.CommandContext(ctx, tf, "apply", "-auto-approve", "-input=false", "-no-color")
	apply.Dir = root
	stdout, err := apply.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, apply.Start())
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "holding") {
	}
	require.NoError(t, sc.Err())

	_, _, err = d.Restore(cluster, cfgID, v.Name, time.Now())
	require.ErrorIs(t, err, localstate.ErrLocked)

	release, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	require.NoError(t, err)
	require.NoError(t, release.Close())
	for sc.Scan() {
	}
	require.NoError(t, apply.Wait())

	restored, _, err := d.Restore(cluster, cfgID, v.Name, time.Now())
	require.NoError(t, err)
	require.Equal(t, 1, restored.Resources)
}
