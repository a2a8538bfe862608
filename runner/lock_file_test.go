package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/errkind"
	"github.com/grapehq/grape/internal/testsupport"
)

// lockFor is the template set's committed lock file with the constraint of
// the aws test module (version = "5.100.0"): the checksum is the mirror's,
// so this also fails when the committed lock no longer matches the mirror.
func lockFor(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "templates", LockFile))
	require.NoError(t, err)
	s := strings.Replace(string(b), `constraints = ">= 5.70.0, < 6.0.0"`, `constraints = "5.100.0"`, 1)
	require.NotEqual(t, string(b), s, "the template set's lock file changed shape; update this test")
	return []byte(s)
}

// TestInitLockFile: a committed lock file is used as is (no "Incomplete
// lock file information" warning, file unchanged); one terraform would
// change fails the run with the committed file put back; without one, the
// run says terraform chose the versions.
func TestInitLockFile(t *testing.T) {
	testsupport.TerraformCLIConfig(t)
	ctx := context.Background()
	r := newRunner(t, Config{ProviderMirror: testsupport.ProviderMirror})

	t.Run("committed", func(t *testing.T) {
		j, rec := newJob(t, "aws")
		lock := lockFor(t)
		require.NoError(t, os.WriteFile(filepath.Join(j.Dir, LockFile), lock, 0o644))
		require.NoError(t, r.Init(ctx, j))
		got, err := os.ReadFile(filepath.Join(j.Dir, LockFile))
		require.NoError(t, err)
		assert.Equal(t, string(lock), string(got))
		assert.NotContains(t, rec.all(), "Incomplete lock file information")
		assert.NotContains(t, rec.all(), "no "+LockFile)
	})

	t.Run("changed by init", func(t *testing.T) {
		j, _ := newJob(t, "aws")
		// A lock of another provider only: terraform adds hashicorp/aws.
		other := []byte("provider \"registry.terraform.io/hashicorp/random\" {\n  version = \"3.6.0\"\n  hashes = [\"h1:AAAA\"]\n}\n")
		require.NoError(t, os.WriteFile(filepath.Join(j.Dir, LockFile), other, 0o644))
		err := r.Init(ctx, j)
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, errkind.Init, e.Kind)
		require.ErrorIs(t, err, ErrLockFileChanged)
		assert.Contains(t, e.Msg, "terraform init changed the committed provider lock file .terraform.lock.hcl")
		assert.Contains(t, e.Msg, "grape templates lock")
		got, rerr := os.ReadFile(filepath.Join(j.Dir, LockFile))
		require.NoError(t, rerr)
		assert.Equal(t, string(other), string(got), "the committed lock file is put back")
	})

	t.Run("none committed", func(t *testing.T) {
		j, rec := newJob(t, "aws")
		require.NoError(t, r.Init(ctx, j))
		assert.Contains(t, strings.Join(rec.agentLines(), "\n"), "no .terraform.lock.hcl in the commit: terraform chose the provider versions for this run itself")
		assert.FileExists(t, filepath.Join(j.Dir, LockFile))
	})

	t.Run("no providers", func(t *testing.T) {
		j, rec := newJob(t, "basic")
		require.NoError(t, r.Init(ctx, j))
		assert.NotContains(t, rec.all(), LockFile)
	})
}
