package render

import (
	"context"
	"fmt"

	"github.com/grapehq/grape/internal/gitfetch"
)

// LoadGit loads a platform team's template set from a git repository:
// url names the repository (https://, ssh://, file:// or a path) and may end
// in //subdir to take the set from a subdirectory, as Terraform module
// sources do ("https://git.example.com/platform/infra.git//templates").
// ref is a branch, tag or full commit hash; empty means the remote's default
// branch. The repository is fetched into a bare clone under cacheDir (kept
// between calls, so later loads only fetch what changed) and read straight
// from the commit, without a working tree (package gitfetch). The set is
// checked as Load does.
func LoadGit(ctx context.Context, url, ref, cacheDir string) (*Catalog, error) {
	snap, err := gitfetch.Fetch(ctx, gitfetch.Request{
		URL: url, Ref: ref, CacheDir: cacheDir, Kind: "templates", KeepHidden: []string{LockFile},
		Limits: gitfetch.Limits{MaxFileSize: maxTemplateFileSize, MaxTotalSize: maxTemplateSetSize, MaxFiles: maxTemplateFiles},
	})
	if err != nil {
		return nil, err
	}
	c, err := Load(snap.Files)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s at %s: %w", snap.Shown, snap.Commit, err)
	}
	return c, nil
}
