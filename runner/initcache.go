package runner

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The init cache keeps what `terraform init` left in .terraform (provider
// links into the plugin cache, the module manifest, the initialised backend)
// for the next run of the same root module, keyed by a fingerprint of
// everything init's result depends on. A run whose fingerprint matches
// starts from a copy and does not run init: with a committed lock file and
// the AWS provider that is ~1.6 s saved (init hashes the ~675 MB provider
// in the plugin cache against the lock file), and terraform still checks
// the same hashes when plan loads the provider.
//
// Layout of Job.InitCache: fingerprint (one line) and terraform/ (the copy).
const (
	initCacheFingerprint = "fingerprint"
	initCacheTree        = "terraform"
	// initCacheFormat changes when what the fingerprint covers changes.
	initCacheFormat = "grape-init-cache 1"
	// maxInitCacheBytes bounds the regular files of a cached .terraform:
	// providers are symlinks into the plugin cache (~40 KB in all); a
	// .terraform holding provider binaries is not worth copying per run.
	maxInitCacheBytes = 16 << 20
)

// dotTerraform is terraform's working directory inside a run dir.
const dotTerraform = ".terraform"

// initFingerprint hashes what decides the result of init in dir: the
// engine and its version, the CLI config (provider installation), the
// -backend-config values, the lock file and every .tf file of the tree
// (backend block, module calls, required_providers). Variable values are
// left out: terraform allows no variables in a backend block or a module
// source. OpenTofu does (early evaluation), so a tree whose backend or
// module source refers to a variable or local is not cached at all, and
// neither is one with .tf.json files, whose expressions are not checked
// here. why says, when fp is "", why the run cannot use the cache.
func (r *Runner) initFingerprint(dir string, j Job) (fp, why string, err error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s %s %s\n", initCacheFormat, r.engine.Name, r.engine.Version, r.bin)
	cli, err := os.ReadFile(r.cliConfig)
	if err != nil {
		return "", "", fmt.Errorf("reading the CLI config: %w", err)
	}
	fmt.Fprintf(h, "cli %d\n", len(cli))
	h.Write(cli)
	for _, k := range sortedKeys(j.BackendConfig) {
		fmt.Fprintf(h, "backend-config %q=%q\n", k, j.BackendConfig[k])
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && d.Name() == dotTerraform {
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".tf.json"):
			why = fmt.Sprintf("%s is JSON configuration, whose backend and module sources are not checked for variables", rel)
			return fs.SkipAll
		case name != LockFile && !strings.HasSuffix(name, ".tf"):
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if name != LockFile {
			if ref := initReference(rel, b); ref != "" {
				why = ref
				return fs.SkipAll
			}
		}
		fmt.Fprintf(h, "file %q %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
		return nil
	})
	if err != nil || why != "" {
		return "", why, err
	}
	return hex.EncodeToString(h.Sum(nil)), "", nil
}

// initReference names a backend or module source/version attribute of a
// .tf file that refers to a variable, local or anything else evaluated (an
// OpenTofu feature): init's result then depends on values the fingerprint
// does not cover. A file that does not parse is left to terraform to report.
func initReference(name string, src []byte) string {
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		return ""
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return ""
	}
	refers := func(attrs hclsyntax.Attributes, names ...string) string {
		for _, a := range attrs {
			if names != nil && !slices.Contains(names, a.Name) {
				continue
			}
			if len(a.Expr.Variables()) > 0 {
				return fmt.Sprintf("%s: %s refers to a value (OpenTofu's early evaluation), which decides what init sets up", a.SrcRange, a.Name)
			}
		}
		return ""
	}
	for _, blk := range body.Blocks {
		switch blk.Type {
		case "module":
			if ref := refers(blk.Body.Attributes, "source", "version"); ref != "" {
				return ref
			}
		case "terraform":
			for _, inner := range blk.Body.Blocks {
				if inner.Type == "backend" || inner.Type == "cloud" {
					if ref := refers(inner.Body.Attributes); ref != "" {
						return ref
					}
				}
			}
		}
	}
	return ""
}

// restoreInit copies the cached .terraform into dir when the cache holds one
// for fp. It says why not otherwise; a failed copy is removed again.
func restoreInit(cache, fp, dir string) (why string) {
	stored, err := os.ReadFile(filepath.Join(cache, initCacheFingerprint))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "none kept yet"
	case err != nil:
		return fmt.Sprintf("reading the cached fingerprint: %v", err)
	}
	if old := strings.TrimSpace(string(stored)); old != fp {
		return fmt.Sprintf("kept one is for %s: the lock file, configuration, backend config or engine changed", shortFP(old))
	}
	dst := filepath.Join(dir, dotTerraform)
	if _, err := os.Lstat(dst); err == nil {
		return "the run dir already has a .terraform"
	}
	if err := copyTree(filepath.Join(cache, initCacheTree), dst, true); err != nil {
		_ = os.RemoveAll(dst)
		return err.Error()
	}
	return ""
}

// saveInit keeps dir's .terraform in cache under fp, replacing what was
// there, unless it holds what must not outlive the run (a credential in the
// backend config), modules downloaded from elsewhere (a later run must
// fetch them again, as it always has), or is too large to copy cheaply.
// why says why nothing was kept.
func saveInit(cache, fp, dir string) (why string, err error) {
	src := filepath.Join(dir, dotTerraform)
	if why, err := uncacheable(src); why != "" || err != nil {
		return why, err
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o700); err != nil {
		return "", fmt.Errorf("creating the init cache dir: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%s", cache, randomSuffix())
	defer os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("creating the init cache: %w", err)
	}
	if err := copyTree(src, filepath.Join(tmp, initCacheTree), false); err != nil {
		return "", fmt.Errorf("copying .terraform to the init cache: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, initCacheFingerprint), []byte(fp+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the init cache fingerprint: %w", err)
	}
	// Swap whole directories, so a reader never sees a fingerprint beside
	// another fingerprint's tree.
	old := fmt.Sprintf("%s.old-%s", cache, randomSuffix())
	if err := os.Rename(cache, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("replacing the init cache: %w", err)
	}
	defer os.RemoveAll(old)
	if err := os.Rename(tmp, cache); err != nil {
		return "", fmt.Errorf("replacing the init cache: %w", err)
	}
	return "", nil
}

// credentialKeys are backend settings that hold secrets rather than names
// of places (the s3, azurerm, gcs, http, pg, consul and remote backends').
var credentialKeys = []string{"access_key", "secret_key", "token", "password", "sse_customer_key",
	"client_secret", "client_certificate_password", "sas_token", "access_token", "credentials",
	"encryption_key", "oidc_token", "msi_token", "conn_str", "private_key", "headers"}

// uncacheable says why a .terraform must not be kept.
func uncacheable(src string) (string, error) {
	// terraform.tfstate here is not state: it records the initialised
	// backend with its merged configuration, -backend-config values
	// included, in plain text.
	b, err := os.ReadFile(filepath.Join(src, "terraform.tfstate"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading .terraform/terraform.tfstate: %w", err)
	}
	if err == nil {
		var st struct {
			Backend struct {
				Config map[string]json.RawMessage `json:"config"`
			} `json:"backend"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Sprintf(".terraform/terraform.tfstate is not what this agent knows (%v)", err), nil
		}
		for _, k := range sortedKeys(st.Backend.Config) {
			v := strings.TrimSpace(string(st.Backend.Config[k]))
			if slices.Contains(credentialKeys, k) && v != "null" && v != `""` {
				return fmt.Sprintf("the backend config sets %s, a credential, which is not kept on disk past the run", k), nil
			}
		}
	}
	m, err := os.ReadFile(filepath.Join(src, "modules", "modules.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading .terraform/modules/modules.json: %w", err)
	}
	if err == nil {
		var man struct {
			Modules []struct {
				Key, Source, Dir string
			}
		}
		if err := json.Unmarshal(m, &man); err != nil {
			return fmt.Sprintf("the module manifest is not what this agent knows (%v)", err), nil
		}
		for _, mod := range man.Modules {
			if strings.HasPrefix(filepath.ToSlash(mod.Dir), dotTerraform+"/") {
				return fmt.Sprintf("module %s is downloaded (%s): every run fetches it again", mod.Key, mod.Source), nil
			}
		}
	}
	var size int64
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		size += info.Size()
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("sizing .terraform: %w", err)
	}
	if size > maxInitCacheBytes {
		return fmt.Sprintf(".terraform holds %d MB of files (providers copied, not linked)", size>>20), nil
	}
	return "", nil
}

// copyTree copies directories, regular files and symlinks. Relative links
// are made absolute (they were relative to src). With checkLinks, a link
// whose target is gone (a pruned plugin cache) fails the copy.
func copyTree(src, dst string, checkLinks bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o700)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			if checkLinks {
				if _, err := os.Stat(target); err != nil {
					return fmt.Errorf("%s links to %s, which is gone", rel, target)
				}
			}
			return os.Symlink(target, out)
		case d.Type().IsRegular():
			return copyFile(p, out)
		}
		return nil // sockets, devices: nothing terraform keeps here
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// shortFP is how a fingerprint is named in the log.
func shortFP(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}
