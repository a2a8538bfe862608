package policy

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/grapehq/grape/internal/gitfetch"
	"github.com/grapehq/grape/templates"
)

// Limits on a policy source: a directory or repository the agent reads must
// not exhaust it.
const (
	maxFileSize  = 1 << 20
	maxTotalSize = 16 << 20
	maxFiles     = 2000
	// setsDir holds one directory per policy set.
	setsDir = "sets"
	// DefaultPackName prefixes the default pack's file names in messages.
	DefaultPackName = "grape-default"
)

// SetNamePattern is what a policy set may be called: it is a directory name
// and a column of configs (configs.policy_set repeats the rule).
var SetNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// ValidateSetName explains a bad policy set name.
func ValidateSetName(name string) error {
	if !SetNamePattern.MatchString(name) {
		return fmt.Errorf("policy set %q: use 1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit", name)
	}
	return nil
}

// File is one .rego file of a policy source.
type File struct {
	// Name is how messages show the file: the path under its --policy-dir
	// as given, "<repository>//<path>" for git, "grape-default/<path>" for
	// the default pack. Unique among the files of a load.
	Name string
	// Path is the slash path relative to the source's root (the digest uses
	// it, so a checkout's location does not change the digest).
	Path string
	// Set is the policy set the file belongs to; "" for every config.
	Set string
	// Test marks a *_test.rego file: `grape policy test` runs it, the
	// agent does not load it.
	Test bool
	// Default marks a file of the embedded default pack.
	Default bool
	Data    []byte
}

// Sources say where policies come from.
type Sources struct {
	// Dirs are directories of .rego files, read recursively.
	Dirs []string
	// GitURL and GitRef name a repository (url//subdir allowed) and a
	// branch, tag or commit; CacheDir keeps its bare clone between loads.
	GitURL, GitRef, CacheDir string
	// DefaultPack adds Grape's default pack.
	DefaultPack bool
}

// Empty reports whether no policy would be loaded.
func (s Sources) Empty() bool {
	return len(s.Dirs) == 0 && s.GitURL == "" && !s.DefaultPack
}

// Collect reads the files of every source.
func (s Sources) Collect(ctx context.Context) ([]File, error) {
	var out []File
	if s.DefaultPack {
		files, err := readFS(templates.Policies(), func(rel string) string { return DefaultPackName + "/" + rel })
		if err != nil {
			return nil, fmt.Errorf("reading the default policy pack: %w", err)
		}
		for i := range files {
			files[i].Default = true
			files[i].Path = DefaultPackName + "/" + files[i].Path
		}
		out = append(out, files...)
	}
	seen := map[string]bool{}
	for _, dir := range s.Dirs {
		clean := filepath.Clean(dir)
		if seen[clean] {
			return nil, fmt.Errorf("--policy-dir %s is given twice", dir)
		}
		seen[clean] = true
		files, err := readDir(dir)
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
	}
	if s.GitURL != "" {
		snap, err := gitfetch.Fetch(ctx, gitfetch.Request{
			URL: s.GitURL, Ref: s.GitRef, CacheDir: s.CacheDir, Kind: "policies",
			Limits: gitfetch.Limits{MaxFileSize: maxFileSize, MaxTotalSize: maxTotalSize, MaxFiles: maxFiles},
		})
		if err != nil {
			return nil, err
		}
		_, sub, _ := gitfetch.SplitSubdir(s.GitURL) // already checked by Fetch
		prefix := snap.Shown + "//"
		if sub != "" {
			prefix += sub + "/"
		}
		files, err := readFS(snap.Files, func(rel string) string { return prefix + rel })
		if err != nil {
			return nil, fmt.Errorf("policies from %s at %s: %w", snap.Shown, snap.Commit, err)
		}
		out = append(out, files...)
	}
	return out, nil
}

func readDir(dir string) ([]File, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("--policy-dir %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("--policy-dir %s: not a directory", dir)
	}
	files, err := readFS(os.DirFS(dir), func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) })
	if err != nil {
		return nil, fmt.Errorf("--policy-dir %s: %w", dir, err)
	}
	return files, nil
}

// readFS reads every .rego file of fsys, skipping hidden files and
// directories. Symlinks to files are followed: a Kubernetes ConfigMap volume
// is a set of symlinks into a hidden ..data directory.
func readFS(fsys fs.FS, name func(rel string) string) ([]File, error) {
	var out []File
	var total int64
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(path.Base(p), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !strings.HasSuffix(p, ".rego") {
			return nil
		}
		info, err := fs.Stat(fsys, p) // follows a symlink
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if info.Size() > maxFileSize {
			return fmt.Errorf("%s is %d bytes; the limit is %d", p, info.Size(), maxFileSize)
		}
		if total += info.Size(); total > maxTotalSize {
			return fmt.Errorf("policies are larger than %d bytes", maxTotalSize)
		}
		if len(out) >= maxFiles {
			return fmt.Errorf("more than %d policy files", maxFiles)
		}
		set, err := setOf(p)
		if err != nil {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		out = append(out, File{Name: name(p), Path: p, Set: set, Test: strings.HasSuffix(p, "_test.rego"), Data: b})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// setOf names the set of a file at slash path p: sets/<name>/… → <name>.
func setOf(p string) (string, error) {
	rest, ok := strings.CutPrefix(p, setsDir+"/")
	if !ok {
		return "", nil
	}
	name, _, nested := strings.Cut(rest, "/")
	if !nested {
		return "", fmt.Errorf("%s: files under %s/ belong in a set's directory, %s/<set>/%s", p, setsDir, setsDir, rest)
	}
	if err := ValidateSetName(name); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return name, nil
}
