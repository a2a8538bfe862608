// Package gitfetch reads a directory tree of one commit of a git repository
// into memory: the mechanism behind --templates-git and --policy-git. The
// repository is fetched into a bare clone under a cache directory (kept
// between calls, so later fetches only bring what changed) and read straight
// from the commit, without a working tree.
package gitfetch

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
	"slices"
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

// locks serialises fetches into the same cache directory within this
// process; go-git's repository storage is not safe for concurrent writers.
var locks sync.Map // cache path → *sync.Mutex

var hashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Request names what to fetch.
type Request struct {
	// URL names the repository (https://, ssh://, file:// or a path) and may
	// end in //subdir to take only a subdirectory, as Terraform module
	// sources do ("https://git.example.com/platform/infra.git//templates").
	URL string
	// Ref is a branch, tag or full commit hash; empty means the remote's
	// default branch.
	Ref string
	// CacheDir holds the bare clones; each repository gets its own
	// directory named Kind plus a hash of its URL.
	CacheDir string
	// Kind says what the tree is, for messages and the cache directory's
	// name: "templates", "policies".
	Kind string
	// Limits keep a mistaken or hostile repository from exhausting the
	// process.
	Limits Limits
	// KeepHidden lists hidden files (paths relative to the tree's root)
	// that are read all the same: a template set's .terraform.lock.hcl.
	// Every other hidden file and directory is skipped.
	KeepHidden []string
}

// Limits bound what a fetched tree may hold.
type Limits struct {
	MaxFileSize  int64
	MaxTotalSize int64
	MaxFiles     int
}

// Snapshot is a fetched tree.
type Snapshot struct {
	// Files holds every regular, non-hidden file of the tree (or of the
	// subdirectory), by slash path relative to it.
	Files fstest.MapFS
	// Commit is the hash of the commit the files were read from.
	Commit string
	// Shown is the repository URL with any password removed, for messages.
	Shown string
}

// Fetch fetches the repository and reads the tree of the requested ref.
// Hidden files and directories (".git", ".github") are left out; symlinks and
// submodules are refused.
func Fetch(ctx context.Context, req Request) (*Snapshot, error) {
	repoURL, subdir, err := SplitSubdir(req.URL)
	if err != nil {
		return nil, fmt.Errorf("loading %s from git: %w", req.Kind, err)
	}
	shown := redact.URL(repoURL)
	if req.CacheDir == "" {
		return nil, fmt.Errorf("loading %s from git: no cache directory given", req.Kind)
	}
	sum := sha256.Sum256([]byte(repoURL))
	dir := filepath.Join(req.CacheDir, req.Kind+"-"+hex.EncodeToString(sum[:8]))
	mu, _ := locks.LoadOrStore(dir, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	repo, err := openOrInitCache(dir, repoURL)
	if err != nil {
		return nil, fmt.Errorf("loading %s from %s: %w", req.Kind, shown, err)
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"},
		Tags:       git.AllTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetching %s from %s: %w", req.Kind, shown, err)
	}
	commit, err := resolveCommit(ctx, repo, req.Ref)
	if err != nil {
		return nil, fmt.Errorf("loading %s from %s: %w", req.Kind, shown, err)
	}
	files, err := commitFS(commit, subdir, req.Kind, req.Limits, req.KeepHidden)
	if err != nil {
		return nil, fmt.Errorf("loading %s from %s at %s: %w", req.Kind, shown, commit.Hash, err)
	}
	return &Snapshot{Files: files, Commit: commit.Hash.String(), Shown: shown}, nil
}

// SplitSubdir splits "url//subdir" (the first "//" after the scheme).
func SplitSubdir(u string) (repoURL, subdir string, err error) {
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
		return "", "", fmt.Errorf("subdirectory %q must be a clean relative path", sub)
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
// within the limits.
func commitFS(c *gitobject.Commit, subdir, kind string, lim Limits, keep []string) (fstest.MapFS, error) {
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
	var total int64
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
		// Hidden entries are skipped; the walker still descends into hidden
		// directories, so their contents are filtered by ancestor.
		if (strings.HasPrefix(path.Base(name), ".") && !slices.Contains(keep, name)) || hiddenAncestor(name) {
			continue
		}
		switch entry.Mode {
		case filemode.Dir:
			continue
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
		case filemode.Symlink:
			return nil, fmt.Errorf("%s is a symlink; %s must be regular files", name, kind)
		case filemode.Submodule:
			return nil, fmt.Errorf("%s is a submodule; %s must be regular files", name, kind)
		default:
			continue
		}
		f, err := tree.TreeEntryFile(&entry)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if lim.MaxFileSize > 0 && f.Size > lim.MaxFileSize {
			return nil, fmt.Errorf("%s is %d bytes; the limit is %d", name, f.Size, lim.MaxFileSize)
		}
		total += f.Size
		if lim.MaxTotalSize > 0 && total > lim.MaxTotalSize {
			return nil, fmt.Errorf("%s are larger than %d bytes", kind, lim.MaxTotalSize)
		}
		if lim.MaxFiles > 0 && len(fsys) >= lim.MaxFiles {
			return nil, fmt.Errorf("%s have more than %d files", kind, lim.MaxFiles)
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
