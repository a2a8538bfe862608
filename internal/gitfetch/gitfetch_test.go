package gitfetch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitSubdir(t *testing.T) {
	for _, tc := range []struct{ in, repo, sub string }{
		{"https://git.example.com/platform/infra.git", "https://git.example.com/platform/infra.git", ""},
		{"https://git.example.com/platform/infra.git//templates", "https://git.example.com/platform/infra.git", "templates"},
		{"ssh://git@git.example.com/infra.git//a/b/", "ssh://git@git.example.com/infra.git", "a/b"},
		{"/srv/git/infra//templates", "/srv/git/infra", "templates"},
		{"file:///srv/git/infra", "file:///srv/git/infra", ""},
	} {
		repo, sub, err := SplitSubdir(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.repo, repo, tc.in)
		assert.Equal(t, tc.sub, sub, tc.in)
	}
	_, _, err := SplitSubdir("/srv/git/infra//../etc")
	assert.ErrorContains(t, err, "must be a clean relative path")
}
