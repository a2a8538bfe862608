package render

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// WriteDir makes dir hold exactly the tree: it writes every file and
// removes files a previous rendering left that the tree no longer has (a
// module dropped from the template set). It refuses a non-empty directory
// that is not a previous rendering (no grape.json), so a mistyped --out
// cannot wipe anything. Terraform's working files (.terraform/, state, plans,
// the lock file) are left alone, as is .git.
func (t *Tree) WriteDir(dir string) error {
	for _, p := range t.Paths() {
		if err := checkTreePath(p); err != nil {
			return fmt.Errorf("writing rendering to %s: %w", dir, err)
		}
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("writing rendering: %w", err)
		}
	case err != nil:
		return fmt.Errorf("writing rendering to %s: %w", dir, err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, FileMetadata)); err != nil {
			return fmt.Errorf("writing rendering to %s: the directory is not empty and holds no %s from an earlier rendering; use an empty or new directory", dir, FileMetadata)
		}
		if err := t.removeStale(dir); err != nil {
			return fmt.Errorf("writing rendering to %s: %w", dir, err)
		}
	}
	for _, p := range t.Paths() {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("writing rendering: %w", err)
		}
		if err := writeFileAtomic(dst, t.Files[p]); err != nil {
			return fmt.Errorf("writing rendering: %w", err)
		}
	}
	return nil
}

func checkTreePath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || strings.Contains(p, "\\") {
		return fmt.Errorf("bad path %q in tree", p)
	}
	return nil
}

// keepUnlisted reports whether a file the tree does not list is left in
// place: Terraform's own working files and git metadata.
func keepUnlisted(rel string) bool {
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".terraform" || seg == ".git" {
			return true
		}
	}
	base := path.Base(rel)
	switch {
	case base == ".terraform.lock.hcl", base == ".terraform.tfstate.lock.info":
		return true
	case strings.HasSuffix(base, ".tfstate"), strings.Contains(base, ".tfstate."):
		return true
	case strings.HasSuffix(base, ".tfplan"), base == "tfplan":
		return true
	}
	return false
}

func (t *Tree) removeStale(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if keepUnlisted(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		if _, ok := t.Files[rel]; !ok {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Deepest first, so emptied parents go too; non-empty ones stay.
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if entries, err := os.ReadDir(d); err == nil && len(entries) == 0 {
			_ = os.Remove(d)
		}
	}
	return nil
}

func writeFileAtomic(dst string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, dst); err != nil {
		os.Remove(name)
		return err
	}
	return nil
}
