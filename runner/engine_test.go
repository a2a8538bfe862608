package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseEngine(t *testing.T) {
	tests := []struct {
		name, banner, json string
		want               Engine
		err                string
	}{
		{"terraform", "Terraform v1.11.4\non linux_amd64\n", `{"terraform_version":"1.11.4","platform":"linux_amd64","provider_selections":{},"terraform_outdated":true}`,
			Engine{EngineTerraform, "1.11.4"}, ""},
		{"opentofu", "OpenTofu v1.10.10\non linux_amd64\n", `{"terraform_version":"1.10.10","platform":"linux_amd64","provider_selections":{}}`,
			Engine{EngineOpenTofu, "1.10.10"}, ""},
		{"opentofu_dev_build", "OpenTofu v1.10.10-dev\non linux_amd64\n", `{"terraform_version":"1.10.10-dev","platform":"linux_amd64"}`,
			Engine{EngineOpenTofu, "1.10.10-dev"}, ""},
		{"something_else", "bash, version 5.2\n", `{}`, Engine{}, "neither terraform nor OpenTofu"},
		{"no_version", "Terraform v1.11.4\n", `{}`, Engine{}, "no terraform_version"},
		{"bad_json", "Terraform v1.11.4\n", `Terraform v1.11.4`, Engine{}, "reading `version -json`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEngine([]byte(tt.banner), []byte(tt.json))
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	assert.Equal(t, "opentofu 1.10.10", Engine{EngineOpenTofu, "1.10.10"}.String())
}

func TestDetectEngine(t *testing.T) {
	for _, e := range testsupport.Engines(t) {
		got, err := DetectEngine(context.Background(), e.Binary)
		require.NoError(t, err)
		assert.Equal(t, e.Name, got.Name)
		assert.NotEmpty(t, got.Version)
	}
	_, err := DetectEngine(context.Background(), "/bin/true")
	require.ErrorContains(t, err, "neither terraform nor OpenTofu")
}

// TestTofuMirror: a mirror laid out for terraform (unpacked and packed
// providers) gains registry.opentofu.org entries with real directories down
// to the version and links only at the leaves; a provider the mirror already
// has under registry.opentofu.org keeps its own copy.
func TestTofuMirror(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{
		"registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws":     "tf-aws",
		"registry.terraform.io/hashicorp/null/terraform-provider-null_3.2.0_linux_amd64.zip": "zip",
		"registry.terraform.io/hashicorp/random/3.6.0/linux_amd64/terraform-provider-random": "tf-random",
		"registry.opentofu.org/hashicorp/random/3.6.0/linux_amd64/terraform-provider-random": "tofu-random",
		"example.com/corp/thing/1.0.0/linux_amd64/terraform-provider-thing":                  "corp",
	}
	for p, body := range files {
		require.NoError(t, os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(src, p), []byte(body), 0o755))
	}
	out, err := tofuMirror(filepath.Join(t.TempDir(), "tofu-mirror"), src)
	require.NoError(t, err)

	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(out, p))
		require.NoError(t, err)
		return string(b)
	}
	assert.Equal(t, "tf-aws", read("registry.opentofu.org/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws"))
	assert.Equal(t, "tf-aws", read("registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws"))
	assert.Equal(t, "zip", read("registry.opentofu.org/hashicorp/null/terraform-provider-null_3.2.0_linux_amd64.zip"))
	assert.Equal(t, "tofu-random", read("registry.opentofu.org/hashicorp/random/3.6.0/linux_amd64/terraform-provider-random"))
	assert.Equal(t, "corp", read("example.com/corp/thing/1.0.0/linux_amd64/terraform-provider-thing"))
	// Only leaves may be links: tofu skips links above them.
	for _, dir := range []string{"registry.opentofu.org", "registry.opentofu.org/hashicorp", "registry.opentofu.org/hashicorp/aws", "registry.opentofu.org/hashicorp/aws/5.100.0"} {
		fi, err := os.Lstat(filepath.Join(out, dir))
		require.NoError(t, err)
		assert.True(t, fi.IsDir(), "%s should be a real directory", dir)
	}
	fi, err := os.Lstat(filepath.Join(out, "registry.opentofu.org/hashicorp/aws/5.100.0/linux_amd64"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, fi.Mode()&os.ModeSymlink)

	// Rebuilt from scratch: a provider removed from the mirror goes.
	require.NoError(t, os.RemoveAll(filepath.Join(src, "registry.terraform.io/hashicorp/null")))
	out, err = tofuMirror(out, src)
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(out, "registry.opentofu.org/hashicorp/null/terraform-provider-null_3.2.0_linux_amd64.zip"))
}
