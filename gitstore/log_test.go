package gitstore_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/gitstore"
)

func TestLatestConfigCommit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := openStore(t, gitstore.Options{Dir: filepath.Join(t.TempDir(), "ws")})
	_, found, err := s.LatestConfigCommit(ctx, "prod")
	require.NoError(t, err)
	require.False(t, found, "an empty workspace has no commit of anything")

	_, err = s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	prod3, err := s.Commit(ctx, change("eu-1", "prod", 3, rendering(2, "vpc"), "vpc"))
	require.NoError(t, err)
	dev, err := s.Commit(ctx, change("eu-1", "dev", 2, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	// A "prod" that is a prefix of another config's id must not match it.
	_, err = s.Commit(ctx, change("eu-1", "prod-2", 9, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	for _, tc := range []struct {
		config  string
		found   bool
		version int
		sha     string
	}{
		{"prod", true, 3, prod3.SHA},
		{"dev", true, 2, dev.SHA},
		{"staging", false, 0, ""},
	} {
		cc, found, err := s.LatestConfigCommit(ctx, tc.config)
		require.NoError(t, err)
		require.Equal(t, tc.found, found, tc.config)
		require.Equal(t, tc.version, cc.Version, tc.config)
		require.Equal(t, tc.sha, cc.SHA, tc.config)
	}
}
