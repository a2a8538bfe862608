package gitstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// ErrNotInCommit is wrapped by Checkout and Files when the commit has no
// clusters/<cluster>/<config> directory.
var ErrNotInCommit = errors.New("config not in commit")

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Files returns the files of clusters/<cluster>/<config>/ in commit sha,
// keyed by relative slash path.
func (s *Store) Files(ctx context.Context, sha, clusterID, configName string) (map[string][]byte, error) {
	files, err := s.configFiles(ctx, sha, clusterID, configName)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(files))
	for p, f := range files {
		out[p] = f.content
	}
	return out, nil
}

// Checkout writes exactly the files of clusters/<cluster>/<config>/ in
// commit sha into dst, which must not exist yet or be empty: byte for byte,
// regular files 0644 and executables 0755 whatever the umask. It reads the
// commit from the object database, never from a working copy, so what
// terraform runs on is what the commit holds. On failure dst is removed if
// Checkout created it.
func (s *Store) Checkout(ctx context.Context, sha, clusterID, configName, dst string) (err error) {
	files, err := s.configFiles(ctx, sha, clusterID, configName)
	if err != nil {
		return err
	}
	created, err := prepareDst(dst)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			_ = os.RemoveAll(dst)
		}
	}()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("checking out %s into %s: %w", sha, dst, err)
		}
		f := files[p]
		full := filepath.Join(dst, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("checking out %s: %w", p, err)
		}
		perm := os.FileMode(0o644)
		if f.mode == filemode.Executable {
			perm = 0o755
		}
		if err := writeNew(full, f.content, perm); err != nil {
			return fmt.Errorf("checking out %s: %w", p, err)
		}
	}
	return nil
}

// prepareDst makes sure dst is a fresh, empty directory and says whether it
// created it.
func prepareDst(dst string) (bool, error) {
	entries, err := os.ReadDir(dst)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return false, fmt.Errorf("creating checkout directory: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("checkout directory %s: %w", dst, err)
	case len(entries) > 0:
		return false, fmt.Errorf("checkout directory %s is not empty: a run directory must hold exactly one commit's files", dst)
	}
	return false, nil
}

func writeNew(path string, content []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The umask may have taken bits away; the commit's mode is the truth.
	return os.Chmod(path, perm)
}

// configFiles reads clusters/<cluster>/<config>/ of commit sha.
func (s *Store) configFiles(ctx context.Context, sha, clusterID, configName string) (map[string]treeFile, error) {
	if err := validSegment("cluster id", clusterID); err != nil {
		return nil, err
	}
	if err := validSegment("config name", configName); err != nil {
		return nil, err
	}
	sha = strings.ToLower(strings.TrimSpace(sha))
	if !shaRE.MatchString(sha) {
		return nil, fmt.Errorf("reading commit %q: not a full 40-hex commit SHA", sha)
	}
	path := configPath(clusterID, configName)
	pathStr := strings.Join(path, "/")
	var files map[string]treeFile
	err := s.withObjects(ctx, func() error {
		c, err := s.commitObject(plumbing.NewHash(sha))
		if err != nil {
			return err
		}
		sub, err := s.subtreeAt(c.TreeHash, path)
		if err != nil {
			return err
		}
		if sub.IsZero() {
			return fmt.Errorf("%w: commit %s has no %s", ErrNotInCommit, sha, pathStr)
		}
		files, err = s.readTree(sub, true)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s at %s: %w", pathStr, short(sha), err)
	}
	return files, nil
}
