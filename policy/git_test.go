package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	gitobject "github.com/go-git/go-git/v5/plumbing/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGitSource loads conftest-style policies from a real git repository
// (go-git's file transport), from a subdirectory, at a tag and a branch,
// and gets the same digest as the same files in a directory.
func TestGitSource(t *testing.T) {
	files := map[string]string{
		"policies/main.rego":         "package main\n\ndeny contains \"from git\" if input.grape.action == \"destroy\"\n",
		"policies/sets/pci/pci.rego": "package main\n\nwarn contains \"pci\" if true\n",
		"README.md":                  "# policies",
	}
	src := writeFiles(t, files)
	repo, err := git.PlainInit(src, false)
	require.NoError(t, err)
	wt, err := repo.Worktree()
	require.NoError(t, err)
	sig := &gitobject.Signature{Name: "Platform", Email: "platform@example.com", When: time.Unix(1700000000, 0)}
	require.NoError(t, wt.AddGlob("."))
	first, err := wt.Commit("policies v1", &git.CommitOptions{Author: sig})
	require.NoError(t, err)
	_, err = repo.CreateTag("v1", first, nil)
	require.NoError(t, err)

	ctx := context.Background()
	cache := t.TempDir()
	e, err := Load(ctx, Sources{GitURL: src + "//policies", GitRef: "v1", CacheDir: cache}, Options{})
	require.NoError(t, err)
	res, err := e.Evaluate(ctx, Input{Plan: []byte(`{}`), Grape: Meta{Action: "destroy"}})
	require.NoError(t, err)
	require.Len(t, res.Verdicts, 1)
	assert.Equal(t, src+"//policies/main.rego", res.Verdicts[0].File)
	assert.Equal(t, []string{"", "pci"}, e.Sets())

	local, err := Load(ctx, Sources{Dirs: []string{filepath.Join(src, "policies")}}, Options{})
	require.NoError(t, err)
	for _, set := range []string{"", "pci"} {
		dg, _ := e.Digest(set)
		dl, _ := local.Digest(set)
		assert.Equal(t, dl, dg, "set %q: the digest does not depend on where the files are", set)
	}

	// A new commit on the branch is seen by the next load; the tag stays.
	require.NoError(t, os.WriteFile(filepath.Join(src, "policies", "main.rego"), []byte("package main\n\ndeny contains \"v2\" if true\n"), 0o644))
	require.NoError(t, wt.AddGlob("."))
	_, err = wt.Commit("policies v2", &git.CommitOptions{Author: sig})
	require.NoError(t, err)
	e2, err := Load(ctx, Sources{GitURL: src + "//policies", GitRef: "master", CacheDir: cache}, Options{})
	require.NoError(t, err)
	res, err = e2.Evaluate(ctx, Input{Plan: []byte(`{}`)})
	require.NoError(t, err)
	assert.Equal(t, []string{"v2"}, messages(res, KindDeny))

	_, err = Load(ctx, Sources{GitURL: src, GitRef: "no-such-ref", CacheDir: cache}, Options{})
	assert.ErrorContains(t, err, `no branch, tag or commit "no-such-ref"`)
}
