package localstate_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/localstate"
)

func TestValidateFiles(t *testing.T) {
	t.Parallel()
	live := localstate.File{Name: localstate.StateFile, Data: state(1, "a")}
	for _, tc := range []struct {
		name  string
		files []localstate.File
		err   string
	}{
		{"state and versions", []localstate.File{live, {Name: "backups/20261206T080000.000000000Z_x.tfstate"}}, ""},
		{"no live state", []localstate.File{{Name: "backups/a.tfstate"}}, "want exactly one terraform.tfstate, got 0"},
		{"two live states", []localstate.File{live, live}, "want exactly one terraform.tfstate, got 2"},
		{"escapes the dir", []localstate.File{live, {Name: "../../etc/x"}}, `state file "../../etc/x": want terraform.tfstate or backups/<version>.tfstate`},
		{"escapes through backups", []localstate.File{live, {Name: "backups/../../x.tfstate"}}, "not a kept version's name"},
		{"hidden", []localstate.File{live, {Name: "backups/.tmp.tfstate"}}, "not a kept version's name"},
		{"absolute", []localstate.File{live, {Name: "/etc/passwd"}}, "want terraform.tfstate or backups/<version>.tfstate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := localstate.ValidateFiles(tc.files)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestExportImportMoveAway(t *testing.T) {
	t.Parallel()
	from, to := localstate.Dir{DataDir: t.TempDir()}, localstate.Dir{DataDir: t.TempDir()}
	_, _, err := from.Export(cluster, cfgID)
	require.ErrorIs(t, err, os.ErrNotExist, "no state: nothing to export")

	writeState(t, from, state(1, "a"))
	_, _, err = from.Snapshot(cluster, cfgID, "before apply", time.Now())
	require.NoError(t, err)
	writeState(t, from, state(2, "a", "b"))
	files, release, err := from.Export(cluster, cfgID)
	require.NoError(t, err)
	require.Len(t, files, 2)
	require.Equal(t, localstate.StateFile, files[0].Name)

	require.NoError(t, to.Import(cluster, cfgID, files, time.Now()))
	vs, err := to.List(cluster, cfgID)
	require.NoError(t, err)
	require.Len(t, vs, 2)
	require.Equal(t, uint64(2), vs[0].Serial)
	require.Equal(t, uint64(1), vs[1].Serial)
	info, err := os.Stat(to.Path(cluster, cfgID))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.ErrorIs(t, to.Import(cluster, cfgID, files, time.Now()), localstate.ErrStateExists, "a live state is never overwritten")

	kept, err := from.MoveAway(cluster, cfgID, "20261206T080000Z-moved-to-agent-b")
	require.NoError(t, err)
	release()
	require.Equal(t, filepath.Join(from.DataDir, localstate.MovedDir, cluster, cfgID, "20261206t080000z-moved-to-agent-b"), kept, "a plain, lower-case name")
	_, err = os.Stat(from.ConfigDir(cluster, cfgID))
	require.ErrorIs(t, err, os.ErrNotExist)
	b, err := os.ReadFile(filepath.Join(kept, localstate.StateFile))
	require.NoError(t, err)
	require.Equal(t, state(2, "a", "b"), b)

	// Not a terraform state: refused, nothing left behind.
	bad := localstate.Dir{DataDir: t.TempDir()}
	require.ErrorContains(t, bad.Import(cluster, cfgID, []localstate.File{{Name: localstate.StateFile, Data: []byte("nope")}}, time.Now()), "not a terraform state file")
	entries, err := os.ReadDir(filepath.Join(bad.DataDir, "state", cluster))
	require.NoError(t, err)
	require.Empty(t, entries)
}
