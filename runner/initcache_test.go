package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/errkind"
	"github.com/grapehq/grape/internal/testsupport"
)

// TestInitCache: the first run of a root module inits and keeps its
// .terraform; the next run with the same files reuses it, says so, skips
// init and plans with it against moto; a plan that fails on a reused copy
// drops it; a changed .tf file, a changed lock file or a provider link gone
// stale means a full init again, and a lock file init would change still
// fails the run.
func TestInitCache(t *testing.T) { eachEngine(t, testInitCache) }

func testInitCache(t *testing.T, eng testsupport.Engine) {
	moto := testsupport.Moto(t)
	ctx := context.Background()
	r := newRunner(t, Config{TerraformBinary: eng.Binary, ProviderMirror: testsupport.ProviderMirror, ExtraEnv: moto.Env("us-east-1")})
	cache := filepath.Join(t.TempDir(), "init-cache", "config-1")
	lock := lockFor(t)
	job := func(edit func(dir string)) (Job, *recorder) {
		j, rec := newJob(t, "aws")
		require.NoError(t, os.WriteFile(filepath.Join(j.Dir, LockFile), lock, 0o644))
		if edit != nil {
			edit(j.Dir)
		}
		j.InitCache = cache
		return j, rec
	}
	agent := func(rec *recorder) string { return strings.Join(rec.agentLines(), "\n") }

	first, rec := job(nil)
	require.NoError(t, r.Init(ctx, first))
	assert.Contains(t, agent(rec), "none kept yet")
	assert.Contains(t, rec.agentLines(), "terraform init")
	assert.Contains(t, agent(rec), "init: kept as ")
	assert.FileExists(t, filepath.Join(cache, initCacheFingerprint))

	second, rec := job(nil)
	require.NoError(t, r.Init(ctx, second))
	assert.Contains(t, agent(rec), "init: reused from ")
	assert.Contains(t, agent(rec), eng.Name)
	assert.NotContains(t, rec.agentLines(), "terraform init", "init must not run")
	assert.NotContains(t, rec.all(), "has been successfully initialized")
	got, err := os.ReadFile(filepath.Join(second.Dir, LockFile))
	require.NoError(t, err)
	assert.Equal(t, string(r.LockFileInRunDir(lock)), string(got))
	res, err := r.Plan(ctx, second, PlanOptions{})
	require.NoError(t, err, "a plan on the reused .terraform")
	assert.Equal(t, 2, res.Summary.Add)

	// A plan that fails on a reused copy drops it: if the copy was what
	// failed, keeping it would fail every later run the same way. The
	// variable values are outside the fingerprint, so the failing run
	// reuses the copy its passing twin kept.
	checkTF, err := os.ReadFile(filepath.Join("testdata", "modules", "precondition", "main.tf"))
	require.NoError(t, err)
	precondition := func(ok bool) func(dir string) {
		return func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "check.tf"), checkTF, 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "terraform.tfvars.json"), []byte(fmt.Sprintf(`{"ok": %t}`, ok)), 0o644))
		}
	}
	passing, _ := job(precondition(true))
	require.NoError(t, r.Init(ctx, passing))
	failing, rec := job(precondition(false))
	require.NoError(t, r.Init(ctx, failing))
	assert.Contains(t, agent(rec), "init: reused from ")
	_, err = r.Plan(ctx, failing, PlanOptions{})
	require.Error(t, err)
	assert.Contains(t, rec.all(), "The ok variable must be true.")
	assert.Contains(t, agent(rec), "init: the kept .terraform is dropped after this failed plan")
	assert.NoDirExists(t, cache)
	again, rec := job(precondition(true))
	require.NoError(t, r.Init(ctx, again))
	assert.Contains(t, agent(rec), "none kept yet")
	assert.Contains(t, rec.agentLines(), "terraform init")

	// A changed .tf file: another fingerprint, a full init, kept anew.
	changed, rec := job(func(dir string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "extra.tf"), []byte("variable \"unused\" {\n  default = 1\n}\n"), 0o644))
	})
	require.NoError(t, r.Init(ctx, changed))
	assert.Contains(t, agent(rec), "the lock file, configuration, backend config or engine changed")
	assert.Contains(t, rec.agentLines(), "terraform init")
	assert.Contains(t, agent(rec), "init: kept as ")

	// A provider link of the kept copy gone stale: a full init.
	link := findLink(t, filepath.Join(cache, initCacheTree))
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink(filepath.Join(t.TempDir(), "gone"), link))
	stale, rec := job(func(dir string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "extra.tf"), []byte("variable \"unused\" {\n  default = 1\n}\n"), 0o644))
	})
	require.NoError(t, r.Init(ctx, stale))
	assert.Contains(t, agent(rec), "which is gone")
	assert.Contains(t, rec.agentLines(), "terraform init")

	// A lock file of another provider: no reuse, and init's change of it
	// still fails the run, with nothing new kept.
	before, err := os.ReadFile(filepath.Join(cache, initCacheFingerprint))
	require.NoError(t, err)
	other, _ := job(func(dir string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, LockFile), []byte("provider \"registry.terraform.io/hashicorp/random\" {\n  version = \"3.6.0\"\n  hashes = [\"h1:AAAA\"]\n}\n"), 0o644))
	})
	err = r.Init(ctx, other)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, errkind.Init, e.Kind)
	after, err := os.ReadFile(filepath.Join(cache, initCacheFingerprint))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "a failed init keeps nothing")

	// Gone with its config.
	require.NoError(t, ForgetInit(cache))
	assert.NoDirExists(t, cache)
}

// findLink returns a symlink under root (a provider link into the plugin
// cache).
func findLink(t *testing.T, root string) string {
	t.Helper()
	var link string
	require.NoError(t, filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode()&os.ModeSymlink != 0 && link == "" {
			link = p
		}
		return err
	}))
	require.NotEmpty(t, link, "the kept .terraform links its provider")
	return link
}

func TestUncacheable(t *testing.T) {
	for _, tc := range []struct {
		name, state, modules, want string
	}{
		{name: "local backend, local modules",
			state:   `{"version":3,"backend":{"type":"local","config":{"path":"/var/lib/grape/state/x.tfstate","workspace_dir":null}}}`,
			modules: `{"Modules":[{"Key":"","Source":"","Dir":"."},{"Key":"vpc","Source":"./modules/vpc","Dir":"modules/vpc"}]}`},
		{name: "s3 without credentials",
			state: `{"version":3,"backend":{"type":"s3","config":{"bucket":"b","key":"k","access_key":null,"secret_key":null,"token":null,"shared_credentials_files":["/etc/aws"]}}}`},
		{name: "s3 secret key",
			state: `{"version":3,"backend":{"type":"s3","config":{"bucket":"b","access_key":"AKIAEXAMPLE","secret_key":"abc"}}}`,
			want:  "sets access_key, a credential"},
		{name: "http password",
			state: `{"version":3,"backend":{"type":"http","config":{"address":"https://x","password":"pw"}}}`,
			want:  "sets password, a credential"},
		{name: "downloaded module",
			modules: `{"Modules":[{"Key":"net","Source":"git::https://example.com/net.git?ref=v1","Dir":".terraform/modules/net"}]}`,
			want:    "module net is downloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), ".terraform")
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "modules"), 0o755))
			if tc.state != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "terraform.tfstate"), []byte(tc.state), 0o600))
			}
			if tc.modules != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "modules", "modules.json"), []byte(tc.modules), 0o600))
			}
			why, err := uncacheable(dir)
			require.NoError(t, err)
			if tc.want == "" {
				assert.Empty(t, why)
			} else {
				assert.Contains(t, why, tc.want)
			}
		})
	}
}

func TestInitReference(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"literals", "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n  }\n}\nmodule \"m\" {\n  source = \"./m\"\n  name   = var.name\n}\n", ""},
		{"module source from a variable", "module \"m\" {\n  source = var.src\n}\n", "main.tf:2,3-19: source refers to a value"},
		{"module version from a local", "module \"m\" {\n  source  = \"x/y/z\"\n  version = local.v\n}\n", "version refers to a value"},
		{"backend from a variable", "terraform {\n  backend \"s3\" {\n    bucket = var.bucket\n  }\n}\n", "bucket refers to a value"},
		{"does not parse", "module \"m\" {", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := initReference("main.tf", []byte(tc.src))
			if tc.want == "" {
				assert.Empty(t, got)
			} else {
				assert.Contains(t, got, tc.want)
			}
		})
	}
}
