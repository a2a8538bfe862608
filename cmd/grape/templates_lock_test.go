package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/templates"
)

// TestTemplatesLock regenerates the lock file of a copy of the embedded set
// from the provider mirror: it must equal the committed one byte for byte
// (the committed file is reproducible). A platform the mirror lacks fails
// with terraform's reason and leaves the file as it was.
func TestTemplatesLock(t *testing.T) {
	testsupport.TerraformCLIConfig(t)
	dir := filepath.Join(t.TempDir(), "set")
	require.NoError(t, os.CopyFS(dir, templates.FS()))
	lock := filepath.Join(dir, ".terraform.lock.hcl")
	committed, err := os.ReadFile(lock)
	require.NoError(t, err)
	require.NoError(t, os.Remove(lock))

	c := newCLI(t)
	out := c.ok("templates", "lock", "--templates", dir, "--provider-mirror", testsupport.ProviderMirror, "--platform", "linux_amd64")
	assert.Contains(t, out, "registry.terraform.io/hashicorp/aws 5.100.0 (1 checksums)")
	got, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.Equal(t, string(committed), string(got), "templates/.terraform.lock.hcl is not what `grape templates lock` makes from the mirror: regenerate it")

	_, errOut, code := c.run("", "templates", "lock", "--templates", dir, "--provider-mirror", testsupport.ProviderMirror, "--platform", "linux_amd64,darwin_arm64")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "terraform providers lock failed (the lock file is unchanged)")
	assert.Contains(t, errOut, "not available for darwin_arm64")
	after, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.Equal(t, string(committed), string(after))

	_, errOut, code = c.run("", "templates", "lock", "--platform", "linux_amd64")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--out FILE is required without --templates")
	_, errOut, _ = c.run("", "templates", "lock", "--out", filepath.Join(dir, "x"), "--platform", "Linux AMD64")
	assert.Contains(t, errOut, `--platform "Linux AMD64" is not a platform`)
}
