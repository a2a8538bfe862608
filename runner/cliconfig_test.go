package runner

import (
	"context"
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
			got, err := cliConfig(tt.cache, tt.mirror, nil, nil)
			require.NoError(t, err)
			golden(t, "cliconfig/"+tt.name+".golden", []byte(got))
		})
	}
	operatorTests := []struct {
		name   string
		mirror string
		file   string
		tofu   bool
	}{
		{"operator_credentials_and_network_mirror", "", "operator_full.tfrc", false},
		{"operator_filesystem_mirror_tofu", "", "operator_mirror.tfrc", true},
		{"operator_credentials_with_agent_mirror", "/opt/tf-plugins", "operator_credentials.tfrc", false},
	}
	for _, tt := range operatorTests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", "cliconfig", tt.file))
			require.NoError(t, err)
			var mirrorFor func(string) (string, error)
			if tt.tofu {
				mirrorFor = func(p string) (string, error) { return "/var/lib/grape/tofu-mirror-0", nil }
			}
			got, err := cliConfig("/var/lib/grape/plugin-cache", tt.mirror, &operatorConfig{name: "/etc/grape/" + tt.file, body: body}, mirrorFor)
			require.NoError(t, err)
			golden(t, "cliconfig/"+tt.name+".golden", []byte(got))
		})
	}
	_, err := cliConfig(`/data/"quoted"`, "", nil, nil)
	require.ErrorContains(t, err, "cannot be written into a terraform CLI config")
	_, err = cliConfig("/data", "/mirror/${HOME}", nil, nil)
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
	want, err := cliConfig(filepath.Join(dir, "plugin-cache"), mirror, nil, nil)
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

// TestCLIConfigConflicts: what the operator's file may not set is refused
// with the setting and the fix named, and no error quotes the file (it may
// hold a registry token).
func TestCLIConfigConflicts(t *testing.T) {
	const token = "s3cr3t-registry-token"
	tests := []struct {
		name, body, mirror, want string
	}{
		{"both_set_provider_installation", `provider_installation {
  direct {}
}
credentials "app.terraform.io" { token = "` + token + `" }
`, "/opt/tf-plugins", "both /etc/op.tfrc and --provider-mirror set provider_installation"},
		{"plugin_cache_dir", `plugin_cache_dir = "/home/op/.terraform.d/plugin-cache"
credentials "app.terraform.io" { token = "` + token + `" }
`, "", "sets plugin_cache_dir; remove it"},
		{"syntax_error", `credentials "app.terraform.io" { token = "` + token + `"
`, "", "reading terraform CLI config /etc/op.tfrc: line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cliConfig("/data/plugin-cache", tt.mirror, &operatorConfig{name: "/etc/op.tfrc", body: []byte(tt.body)}, nil)
			require.ErrorContains(t, err, tt.want)
			assert.NotContains(t, err.Error(), token)
			if tt.name != "syntax_error" {
				assert.ErrorIs(t, err, ErrCLIConfigConflict)
			}
		})
	}
}

// TestOperatorCLIConfigMirrorOnly: an operator's own CLI config whose only
// block is a filesystem mirror (no --provider-mirror) installs the AWS
// provider and plans, under both engines; the agent's plugin cache is
// merged in, not the operator's settings replaced.
func TestOperatorCLIConfigMirrorOnly(t *testing.T) { eachEngine(t, testOperatorCLIConfigMirrorOnly) }

func testOperatorCLIConfigMirrorOnly(t *testing.T, eng testsupport.Engine) {
	testsupport.TerraformCLIConfig(t) // fails with a clear message when the provider mirror is missing
	moto := testsupport.Moto(t)
	op := filepath.Join(t.TempDir(), "operator.tfrc")
	const token = "operator-registry-token-never-logged"
	body := "credentials \"registry.corp.example\" {\n  token = \"" + token + "\"\n}\n" +
		"provider_installation {\n  filesystem_mirror {\n    path = \"" + testsupport.ProviderMirror + "\"\n  }\n}\n"
	require.NoError(t, os.WriteFile(op, []byte(body), 0o600))
	r := newRunner(t, Config{TerraformBinary: eng.Binary, CLIConfigFile: op, ExtraEnv: moto.Env("us-east-1")})
	written, err := os.ReadFile(r.CLIConfigFile())
	require.NoError(t, err)
	assert.Contains(t, string(written), "plugin_cache_dir")
	assert.Contains(t, string(written), token, "the operator's credentials block is kept")
	fi, err := os.Stat(r.CLIConfigFile())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the merged config may hold credentials")

	j, rec := newJob(t, "aws")
	require.NoError(t, r.Init(context.Background(), j))
	res, err := r.Plan(context.Background(), j, PlanOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Summary.Add)
	assert.NotContains(t, rec.all(), token)
}

// TestNewRefusesConflictingCLIConfig: the inherited TF_CLI_CONFIG_FILE is
// read like --terraform-cli-config, and a provider_installation in it next
// to --provider-mirror stops the start.
func TestNewRefusesConflictingCLIConfig(t *testing.T) {
	op := filepath.Join(t.TempDir(), "operator.tfrc")
	require.NoError(t, os.WriteFile(op, []byte("provider_installation {\n  direct {}\n}\n"), 0o600))
	t.Setenv("TF_CLI_CONFIG_FILE", op)
	_, err := New(Config{TerraformBinary: testsupport.TerraformBinary(t), DataDir: t.TempDir(), ProviderMirror: testsupport.ProviderMirror})
	require.ErrorIs(t, err, ErrCLIConfigConflict)
	require.ErrorContains(t, err, "both "+op+" and --provider-mirror set provider_installation")

	_, err = New(Config{TerraformBinary: testsupport.TerraformBinary(t), DataDir: t.TempDir(), CLIConfigFile: filepath.Join(t.TempDir(), "missing.tfrc")})
	assert.ErrorContains(t, err, "reading the terraform CLI config named by --terraform-cli-config")
}
