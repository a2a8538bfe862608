package gitstore_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/gitstore"
)

// TestCommitsKeepLooseObjectsBounded: 250 deployments' commits (~6 new
// objects each) never leave more than the packing threshold plus one
// commit's objects loose; checkouts running alongside read every commit,
// packed or not; git fsck finds the repository whole.
func TestCommitsKeepLooseObjectsBounded(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "workspace")
	s := openStore(t, gitstore.Options{Dir: dir})

	var shas []string
	var mu sync.Mutex
	maxLoose := 0
	stop := make(chan struct{})
	checkouts := make(chan error, 1)
	go func() {
		// Checkouts of earlier commits while later ones are packed.
		defer close(checkouts)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			n := len(shas)
			var sha string
			if n > 0 {
				sha = shas[i%n]
			}
			mu.Unlock()
			if sha == "" {
				continue
			}
			if err := s.Checkout(ctx, sha, "eu-1", "prod", filepath.Join(t.TempDir(), fmt.Sprint("run-", i))); err != nil {
				checkouts <- fmt.Errorf("checkout of %s: %w", sha, err)
				return
			}
		}
	}()
	for i := 1; i <= 250; i++ {
		res, err := s.Commit(ctx, change("eu-1", "prod", i, rendering(i, "vpc"), "vpc"))
		require.NoError(t, err)
		mu.Lock()
		shas = append(shas, res.SHA)
		mu.Unlock()
		n, err := gitstore.LooseObjectCount(s)
		require.NoError(t, err)
		maxLoose = max(maxLoose, n)
	}
	close(stop)
	require.NoError(t, <-checkouts)
	assert.LessOrEqual(t, maxLoose, 620, "loose objects should be packed past the threshold")
	assert.Greater(t, maxLoose, 100, "the test should have written enough objects to pack")

	res, err := s.Maintain(ctx)
	require.NoError(t, err)
	assert.LessOrEqual(t, res.LooseAfter, 620)
	assert.Equal(t, 2, res.Merged, "two packs of ~600 objects merge into one")
	assert.Equal(t, 1, res.PacksAfter)
	again, err := s.Maintain(ctx)
	require.NoError(t, err)
	assert.Zero(t, again.Merged, "nothing left to merge")
	r := reviewer{t, dir}
	r.fsck()
	assert.Equal(t, "250", r.trailer("main", "Grape-Deployment"))
	assert.Equal(t, shas[0], r.git("rev-list", "--max-parents=0", "main"))
	// Every commit still checks out after packing.
	for _, i := range []int{0, 100, 249} {
		require.NoError(t, s.Checkout(ctx, shas[i], "eu-1", "prod", filepath.Join(t.TempDir(), fmt.Sprint("after-", i))))
	}
}
