package runner

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCLIConfig(t *testing.T) {
	tests := []struct {
		name   string
		cache  string
		mirror string
	}{
		{"cache_only", "/var/lib/grape/plugin-cache", ""},
		{"cache_and_mirror", "/var/lib/grape/plugin-cache", "/opt/tf-plugins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cliConfig(tt.cache, tt.mirror)
			require.NoError(t, err)
			golden(t, "cliconfig/"+tt.name+".golden", []byte(got))
		})
	}
	_, err := cliConfig(`/data/"quoted"`, "")
	require.ErrorContains(t, err, "cannot be written into a terraform CLI config")
	_, err = cliConfig("/data", "/mirror/${HOME}")
	require.Error(t, err)
}

func TestNewWritesConfigAndCache(t *testing.T) {
	testsupport.TerraformBinary(t)
	dir := t.TempDir()
	mirror := t.TempDir()
	r, err := New(Config{DataDir: dir, ProviderMirror: mirror})
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(dir, "plugin-cache"))
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
	body, err := os.ReadFile(r.CLIConfigFile())
	require.NoError(t, err)
	want, err := cliConfig(filepath.Join(dir, "plugin-cache"), mirror)
	require.NoError(t, err)
	assert.Equal(t, want, string(body))

	_, err = New(Config{DataDir: dir, ProviderMirror: filepath.Join(dir, "missing")})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, "provider mirror")
	notDir := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o600))
	_, err = New(Config{DataDir: dir, ProviderMirror: notDir})
	require.ErrorContains(t, err, "provider mirror "+notDir+" is not a directory")
	_, err = New(Config{DataDir: dir, TerraformBinary: filepath.Join(dir, "no-such-terraform")})
	require.ErrorContains(t, err, "not found")
	_, err = New(Config{DataDir: dir, EnvAllowlist: []string{"GRAPE_GIT_TOKEN"}})
	require.ErrorContains(t, err, "never passed to terraform")
	_, err = New(Config{})
	require.ErrorContains(t, err, "data directory")
}
