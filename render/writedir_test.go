package render

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteDir(t *testing.T) {
	c := catalog(t)
	dir := filepath.Join(t.TempDir(), "clusters", "prod-eu", "platform")
	tree := renderSpec(t, c, []byte(`{"modules": {"vpc": {}}}`))
	require.NoError(t, tree.WriteDir(dir))
	for _, p := range tree.Paths() {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		require.NoError(t, err)
		assert.Equal(t, string(tree.Files[p]), string(b), p)
	}

	// A rerender over a previous one removes what the tree no longer has and
	// keeps Terraform's working files and git metadata.
	stray := map[string]bool{
		"old.tf":                    false,
		"modules/redis/main.tf":     false,
		".terraform/modules/x.json": true,
		".terraform.lock.hcl":       true,
		"terraform.tfstate":         true,
		"terraform.tfstate.backup":  true,
		"plan.tfplan":               true,
		".git/HEAD":                 true,
		"modules/vpc/.terraform/x":  true,
	}
	for p := range stray {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, []byte("x"), 0o644))
	}
	next := renderSpec(t, c, []byte(`{"modules": {"vpc": {"az_count": 3}}}`))
	require.NoError(t, next.WriteDir(dir))
	for p, kept := range stray {
		_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p)))
		assert.Equal(t, kept, err == nil, "%s kept=%v, stat err=%v", p, kept, err)
	}
	_, err := os.Stat(filepath.Join(dir, "modules", "redis"))
	assert.True(t, os.IsNotExist(err), "the emptied module directory is removed")
	b, err := os.ReadFile(filepath.Join(dir, FileTFVars))
	require.NoError(t, err)
	assert.Contains(t, string(b), `"vpc_az_count": 3`)

	// A directory that is not a rendering is never cleaned.
	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644))
	err = next.WriteDir(other)
	require.ErrorContains(t, err, "the directory is not empty and holds no grape.json from an earlier rendering")
	_, err = os.Stat(filepath.Join(other, "notes.txt"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(other, FileMain))
	assert.True(t, os.IsNotExist(err))

	bad := &Tree{Files: map[string][]byte{"../escape.tf": nil}}
	assert.ErrorContains(t, bad.WriteDir(t.TempDir()), `bad path "../escape.tf" in tree`)
}
