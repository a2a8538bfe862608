package render

import (
	"bytes"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/templates"
)

// intentFiles returns testdata/intents/*.json by name (without .json).
func intentFiles(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("testdata/intents/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		out[strings.TrimSuffix(filepath.Base(p), ".json")] = b
	}
	return out
}

func renderSpec(t *testing.T, c *Catalog, spec []byte) *Tree {
	t.Helper()
	in, err := c.Validate(spec)
	require.NoError(t, err)
	tree, err := c.Render(in, testMeta)
	require.NoError(t, err)
	return tree
}

// sharedFiles do not depend on the intent: an intent reaches only the
// tfvars, intent.json, providers.tf and grape.json, so a config change shows
// in the values, never in the module wiring. One golden copy of them, in
// testdata/golden/_shared/, serves every intent — which TestGolden checks.
var sharedFiles = []string{FileMain, FileVariables, FileOutputs}

// TestGolden renders every intent under testdata/intents and compares the
// tree with testdata/golden/<name>/ (and the intent-independent files with
// testdata/golden/_shared/). The modules/ copies are not kept as golden files
// (they would repeat the templates once per intent); they are compared with
// the embedded templates instead. Refresh with -update.
func TestGolden(t *testing.T) {
	c := catalog(t)
	shared := filepath.Join("testdata", "golden", "_shared")
	if *update {
		tree := renderSpec(t, c, intentFiles(t)["all-modules"])
		require.NoError(t, os.MkdirAll(shared, 0o755))
		for _, f := range sharedFiles {
			require.NoError(t, os.WriteFile(filepath.Join(shared, f), tree.Files[f], 0o644))
		}
	}
	for name, spec := range intentFiles(t) {
		t.Run(name, func(t *testing.T) {
			tree := renderSpec(t, c, spec)
			dir := filepath.Join("testdata", "golden", name)

			own := map[string][]byte{}
			var modulePaths []string
			for p, b := range tree.Files {
				if strings.HasPrefix(p, ModulesDir+"/") {
					modulePaths = append(modulePaths, p)
					continue
				}
				own[p] = b
			}
			for _, f := range sharedFiles {
				want, err := os.ReadFile(filepath.Join(shared, f))
				require.NoError(t, err)
				assert.Equal(t, string(want), string(own[f]), "%s differs from %s: it must not depend on the intent (run with -update to accept)", f, filepath.Join(shared, f))
				delete(own, f)
			}
			if *update {
				require.NoError(t, os.RemoveAll(dir))
				for p, b := range own {
					dst := filepath.Join(dir, filepath.FromSlash(p))
					require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
					require.NoError(t, os.WriteFile(dst, b, 0o644))
				}
			}
			golden := readTree(t, dir)
			assert.Equal(t, sortedKeys(golden), sortedKeys(own), "files differ from %s (run with -update to accept)", dir)
			for p, want := range golden {
				assert.Equal(t, string(want), string(own[p]), "%s differs from %s (run with -update to accept)", p, filepath.Join(dir, p))
			}

			// Every template file is copied byte for byte, enabled or not.
			var want []string
			require.NoError(t, fs.WalkDir(templates.FS(), ".", func(p string, d fs.DirEntry, err error) error {
				require.NoError(t, err)
				if d.IsDir() || !strings.Contains(p, "/") {
					return nil
				}
				want = append(want, path.Join(ModulesDir, p))
				b, err := fs.ReadFile(templates.FS(), p)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(b, tree.Files[path.Join(ModulesDir, p)]), "copy of %s differs", p)
				return nil
			}))
			sort.Strings(want)
			sort.Strings(modulePaths)
			assert.Equal(t, want, modulePaths)
		})
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	require.NoError(t, err, "reading golden tree %s (run with -update to create it)", dir)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestRenderDeterministic renders the same intent, spelled differently and
// from separately loaded catalogs, and expects identical trees.
func TestRenderDeterministic(t *testing.T) {
	a, err := Default()
	require.NoError(t, err)
	b, err := Default()
	require.NoError(t, err)
	t1 := renderSpec(t, a, []byte(`{"modules": {"vpc": {"az_count": 3}, "eks": {}, "rds": {}, "karpenter": {}}, "tags": {"x": "1", "a": "2"}}`))
	t2 := renderSpec(t, b, []byte(`{"tags": {"a": "2", "x": "1"}, "region": "eu-central-1", "modules": {"karpenter": {"enabled": true}, "rds": {}, "eks": {}, "vpc": {"az_count": 3.0}}}`))
	require.Equal(t, t1.Paths(), t2.Paths())
	for _, p := range t1.Paths() {
		assert.True(t, bytes.Equal(t1.Files[p], t2.Files[p]), "%s differs between renders", p)
	}
}

// TestMainDoesNotDependOnIntent pins a design choice: switching modules
// and changing inputs only changes the tfvars, intent.json and grape.json, so
// a reviewer reads a config change in one place.
func TestMainDoesNotDependOnIntent(t *testing.T) {
	c := catalog(t)
	files := intentFiles(t)
	ref := renderSpec(t, c, files["none"])
	for name, spec := range files {
		tree := renderSpec(t, c, spec)
		for _, f := range []string{FileMain, FileVariables, FileOutputs} {
			assert.Equal(t, string(ref.Files[f]), string(tree.Files[f]), "%s of %s", f, name)
		}
	}
}

func TestRenderMeta(t *testing.T) {
	c := catalog(t)
	in, err := c.Validate([]byte(`{"modules": {"vpc": {}}, "backend": {"type": "s3", "bucket": "acme-tf-state"}}`))
	require.NoError(t, err)

	tree, err := c.Render(in, Meta{ClusterID: "edge-1", ConfigID: "cfg-7"})
	require.NoError(t, err)
	assert.Equal(t, "grape/edge-1/cfg-7/terraform.tfstate", tree.Backend.Key)
	assert.Contains(t, string(tree.Files[FileProviders]), `key          = "grape/edge-1/cfg-7/terraform.tfstate"`)
	// Without a name, the config id is the grape:config tag.
	assert.Contains(t, string(tree.Files[FileMain]), `"grape:config"  = "cfg-7"`)
	assert.Empty(t, in.Backend().Key, "the intent's own backend keeps the key unset")

	for _, bad := range []Meta{
		{ClusterID: "", ConfigID: "x"},
		{ClusterID: "Prod EU", ConfigID: "x"},
		{ClusterID: "prod", ConfigID: "../x"},
		{ClusterID: "prod", ConfigID: "x", ConfigName: "Bad Name"},
	} {
		_, err := c.Render(in, bad)
		require.Error(t, err, "meta %+v", bad)
	}

	_, _, err = c.RenderSpec([]byte(`{"modules": {"eks": {}}}`), testMeta)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	in2, tree2, err := c.RenderSpec([]byte(`{"modules": {"vpc": {}}}`), testMeta)
	require.NoError(t, err)
	assert.Equal(t, []string{"vpc"}, in2.EnabledModules())
	assert.Contains(t, string(tree2.Files[FileTFVars]), `"enable_vpc": true`)

	other, err := LoadDir("testdata/templates-extra")
	require.NoError(t, err)
	_, err = other.Render(in, testMeta)
	assert.ErrorContains(t, err, "validated against another template set")
}
