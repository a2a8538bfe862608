package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing/fstest"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	gitobject "github.com/go-git/go-git/v5/plumbing/object"

	"github.com/grapehq/grape/redact"
)

// gitLocks serialises fetches into the same cache directory within this
// process; go-git's repository storage is not safe for concurrent writers.
var gitLocks sync.Map // cache path → *sync.Mutex

var hashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// LoadGit loads a platform team's template set from a git repository:
// url names the repository (https://, ssh://, file:// or a path) and may end
// in //subdir to take the set from a subdirectory, as Terraform module
// sources do ("https://git.example.com/platform/infra.git//templates").
// ref is a branch, tag or full commit hash; empty means the remote's default
// branch. The repository is fetched into a bare clone under cacheDir (kept
// between calls, so later loads only fetch what changed) and read straight
// from the commit, without a working tree. The set is checked as Load does.
func LoadGit(ctx context.Context, url, ref, cacheDir string) (*Catalog, error) {
	repoURL, subdir, err := splitGitSubdir(url)
	if err != nil {
		return nil, err
	}
	shown := redact.URL(repoURL)
	if cacheDir == "" {
		return nil, errors.New("loading templates from git: no cache directory given")
	}
	sum := sha256.Sum256([]byte(repoURL))
	dir := filepath.Join(cacheDir, "templates-"+hex.EncodeToString(sum[:8]))
	mu, _ := gitLocks.LoadOrStore(dir, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	repo, err := openOrInitCache(dir, repoURL)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s: %w", shown, err)
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"},
		Tags:       git.AllTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetching templates from %s: %w", shown, err)
	}
	commit, err := resolveCommit(ctx, repo, ref)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s: %w", shown, err)
	}
	fsys, err := commitFS(commit, subdir)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s at %s: %w", shown, commit.Hash, err)
	}
	c, err := Load(fsys)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s at %s: %w", shown, commit.Hash, err)
	}
	return c, nil
}

// splitGitSubdir splits "url//subdir" (the first "//" after the scheme).
func splitGitSubdir(u string) (string, string, error) {
	start := 0
	if i := strings.Index(u, "://"); i >= 0 {
		start = i + 3
	}
	i := strings.Index(u[start:], "//")
	if i < 0 {
		return u, "", nil
	}
	repoURL, sub := u[:start+i], strings.Trim(u[start+i+2:], "/")
	if sub == "" {
		return repoURL, "", nil
	}
	if path.Clean(sub) != sub || sub == ".." || strings.HasPrefix(sub, "../") {
		return "", "", fmt.Errorf("loading templates from git: subdirectory %q must be a clean relative path", sub)
	}
	return repoURL, sub, nil
}

func openOrInitCache(dir, url string) (*git.Repository, error) {
	repo, err := git.PlainOpen(dir)
	switch {
	case err == nil:
		remote, err := repo.Remote("origin")
		if err != nil {
			return nil, fmt.Errorf("cache %s: %w", dir, err)
		}
		if urls := remote.Config().URLs; len(urls) != 1 || urls[0] != url {
			return nil, fmt.Errorf("cache %s belongs to another repository; remove it", dir)
		}
		return repo, nil
	case errors.Is(err, git.ErrRepositoryNotExists):
	default:
		return nil, fmt.Errorf("opening cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating cache: %w", err)
	}
	repo, err = git.PlainInit(dir, true)
	if err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", dir, err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", dir, err)
	}
	return repo, nil
}

// resolveCommit finds ref among the fetched branches and tags, or as a
// commit hash.
func resolveCommit(ctx context.Context, repo *git.Repository, ref string) (*gitobject.Commit, error) {
	if ref == "" {
		remote, err := repo.Remote("origin")
		if err != nil {
			return nil, err
		}
		refs, err := remote.ListContext(ctx, &git.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing remote refs: %w", err)
		}
		for _, r := range refs {
			if r.Name() == plumbing.HEAD && r.Type() == plumbing.SymbolicReference {
				ref = r.Target().Short()
			}
		}
		if ref == "" {
			return nil, errors.New("the remote has no default branch (HEAD); give a ref")
		}
	}
	if hashRE.MatchString(ref) {
		c, err := repo.CommitObject(plumbing.NewHash(ref))
		if err != nil {
			return nil, fmt.Errorf("commit %s is not on any fetched branch or tag: %w", ref, err)
		}
		return c, nil
	}
	candidates := []plumbing.ReferenceName{
		plumbing.NewRemoteReferenceName("origin", ref),
		plumbing.NewTagReferenceName(ref),
	}
	if strings.HasPrefix(ref, "refs/heads/") {
		candidates = append(candidates, plumbing.NewRemoteReferenceName("origin", strings.TrimPrefix(ref, "refs/heads/")))
	}
	if strings.HasPrefix(ref, "refs/tags/") {
		candidates = append(candidates, plumbing.ReferenceName(ref))
	}
	for _, name := range candidates {
		r, err := repo.Reference(name, true)
		if err != nil {
			continue
		}
		if c, err := repo.CommitObject(r.Hash()); err == nil {
			return c, nil
		}
		// An annotated tag: peel it to its commit.
		tag, err := repo.TagObject(r.Hash())
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", ref, err)
		}
		c, err := tag.Commit()
		if err != nil {
			return nil, fmt.Errorf("tag %s does not point at a commit: %w", ref, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("no branch, tag or commit %q in the repository", ref)
}

// commitFS reads a commit's tree (or a subdirectory of it) into memory,
// within the template set limits.
func commitFS(c *gitobject.Commit, subdir string) (fstest.MapFS, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	if subdir != "" {
		tree, err = tree.Tree(subdir)
		if err != nil {
			return nil, fmt.Errorf("subdirectory %s: %w", subdir, err)
		}
	}
	fsys := fstest.MapFS{}
	total := 0
	walker := gitobject.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(path.Base(name), ".") {
			continue // hidden, as Load ignores them; walker still descends, filtered below
		}
		if hiddenAncestor(name) {
			continue
		}
		switch entry.Mode {
		case filemode.Dir:
			continue
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
		case filemode.Symlink:
			return nil, fmt.Errorf("%s is a symlink; template sets must hold regular files", name)
		case filemode.Submodule:
			return nil, fmt.Errorf("%s is a submodule; template sets must hold regular files", name)
		default:
			continue
		}
		f, err := tree.TreeEntryFile(&entry)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if f.Size > maxTemplateFileSize {
			return nil, fmt.Errorf("%s is %d bytes; the limit is %d", name, f.Size, maxTemplateFileSize)
		}
		total += int(f.Size)
		if total > maxTemplateSetSize {
			return nil, fmt.Errorf("template set is larger than %d bytes", maxTemplateSetSize)
		}
		if len(fsys) >= maxTemplateFiles {
			return nil, fmt.Errorf("template set has more than %d files", maxTemplateFiles)
		}
		contents, err := f.Contents()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		fsys[name] = &fstest.MapFile{Data: []byte(contents), Mode: 0o644}
	}
	return fsys, nil
}

func hiddenAncestor(name string) bool {
	for _, seg := range strings.Split(path.Dir(name), "/") {
		if strings.HasPrefix(seg, ".") && seg != "." {
			return true
		}
	}
	return false
}
