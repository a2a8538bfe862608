package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/grapehq/grape/render"
)

// defaultLockPlatforms are what a lock file from the registry covers: the
// agents' platforms and the laptops people run `grape render` and terraform
// on.
var defaultLockPlatforms = []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"}

var platformRE = regexp.MustCompile(`^[a-z0-9]+_[a-z0-9]+$`)

// listFlag is a flag that may be repeated and takes comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func init() {
	register(&command{
		name:    "templates lock",
		summary: "regenerate a template set's provider lock file (.terraform.lock.hcl) with terraform providers lock",
		long: `Writes the provider lock file of a template set: the provider versions and
checksums every rendering carries and every run installs (a provider upgrade is
then a reviewed commit). --templates DIR locks that set and writes
DIR/.terraform.lock.hcl; without it the embedded set is locked and written to
--out (Grape's own: --out templates/.terraform.lock.hcl). The set is rendered to a
scratch root module and terraform providers lock runs there, from
--provider-mirror (a filesystem mirror) or else the registry, for each
--platform (repeat or comma-separate; default: the four linux/darwin amd64 and
arm64 platforms from the registry, this machine's platform from a mirror, as
a mirror holds only what was put in it). The old file is replaced only when
terraform succeeds.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var dir, out, mirror, tfBin string
			var platforms listFlag
			fs.StringVar(&dir, "templates", "", "the template set's directory; the lock file is written there (default: the embedded set)")
			fs.StringVar(&out, "out", "", "where to write the lock file (default DIR/.terraform.lock.hcl; required without --templates)")
			fs.StringVar(&mirror, "provider-mirror", "", "install from this filesystem mirror instead of the registry")
			fs.Var(&platforms, "platform", "platform to record checksums for, e.g. linux_amd64 (repeatable)")
			fs.StringVar(&tfBin, "terraform-binary", "terraform", "terraform binary")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				switch {
				case out == "" && dir == "":
					return usagef("--out FILE is required without --templates (Grape's own set: --out templates/.terraform.lock.hcl)")
				case out == "":
					out = filepath.Join(dir, render.LockFile)
				}
				if len(platforms) == 0 {
					platforms = defaultLockPlatforms
					if mirror != "" {
						platforms = []string{runtime.GOOS + "_" + runtime.GOARCH}
					}
				}
				for _, p := range platforms {
					if !platformRE.MatchString(p) {
						return usagef("--platform %q is not a platform: use OS_ARCH, e.g. linux_amd64", p)
					}
				}
				cat, err := render.Default()
				if dir != "" {
					if cat, err = render.LoadDir(dir); err != nil {
						err = fmt.Errorf("--templates %s: %w", dir, err)
					}
				}
				if err != nil {
					return err
				}
				lock, err := lockTemplates(ctx, cat, out, mirror, tfBin, platforms)
				if err != nil {
					return err
				}
				fmt.Fprintf(cio.stdout, "wrote %s for %s:\n%s", out, strings.Join(platforms, ", "), lockSummary(lock))
				return nil
			}
		},
	})
}

// lockTemplates renders the set with no module enabled (every module is in
// every rendering, so their provider requirements are all there), runs
// terraform providers lock on it and writes the result to dst.
func lockTemplates(ctx context.Context, cat *render.Catalog, dst, mirror, tfBin string, platforms []string) ([]byte, error) {
	bin, err := exec.LookPath(tfBin)
	if err != nil {
		return nil, fmt.Errorf("--terraform-binary %s: %w", tfBin, err)
	}
	if mirror != "" {
		if mirror, err = filepath.Abs(mirror); err != nil {
			return nil, fmt.Errorf("--provider-mirror: %w", err)
		}
		if st, err := os.Stat(mirror); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--provider-mirror %s is not a directory", mirror)
		}
	}
	_, tree, err := cat.RenderSpec([]byte(`{"region":"us-east-1","modules":{}}`), render.Meta{ClusterID: "lock", ConfigID: "lock"})
	if err != nil {
		return nil, fmt.Errorf("rendering the template set to lock it: %w", err)
	}
	delete(tree.Files, render.LockFile) // a fresh selection, not an update of the old one
	work, err := os.MkdirTemp("", "grape-lock-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if err := tree.WriteDir(root); err != nil {
		return nil, err
	}
	// An empty CLI config: the user's own (a mirror, a plugin cache) must
	// not change what is recorded.
	cliConfig := filepath.Join(work, "terraformrc")
	if err := os.WriteFile(cliConfig, nil, 0o644); err != nil {
		return nil, err
	}
	tf := func(args ...string) error {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+cliConfig, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			name := args[0]
			if name == "providers" {
				name += " lock"
			}
			return fmt.Errorf("terraform %s failed (the lock file is unchanged): %s: %w", name, strings.TrimSpace(out.String()), err)
		}
		return nil
	}
	// providers lock reads the modules' requirements from installed
	// modules; get installs the (local) modules and no provider.
	if err := tf("get", "-no-color"); err != nil {
		return nil, err
	}
	args := []string{"providers", "lock", "-no-color"}
	if mirror != "" {
		args = append(args, "-fs-mirror="+mirror)
	}
	for _, p := range platforms {
		args = append(args, "-platform="+p)
	}
	if err := tf(args...); err != nil {
		return nil, err
	}
	lock, err := os.ReadFile(filepath.Join(root, render.LockFile))
	if err != nil {
		return nil, fmt.Errorf("terraform providers lock wrote no lock file: %w", err)
	}
	tmp := dst + ".tmp"
	if err := errors.Join(os.WriteFile(tmp, lock, 0o644), os.Rename(tmp, dst)); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("writing %s: %w", dst, err)
	}
	return lock, nil
}

var lockLineRE = regexp.MustCompile(`(?m)^provider "([^"]+)" \{\n\s+version\s+= "([^"]+)"`)

// lockSummary lists each locked provider with its version and hash count.
func lockSummary(lock []byte) string {
	var b strings.Builder
	blocks := strings.Split(string(lock), "\nprovider ")
	for _, m := range lockLineRE.FindAllStringSubmatch(string(lock), -1) {
		hashes := 0
		for _, blk := range blocks {
			if strings.Contains(blk, `"`+m[1]+`"`) {
				hashes = strings.Count(blk, `"h1:`) + strings.Count(blk, `"zh:`)
			}
		}
		fmt.Fprintf(&b, "  %s %s (%d checksums)\n", m[1], m[2], hashes)
	}
	return b.String()
}
