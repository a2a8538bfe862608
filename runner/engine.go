package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Engine names. They are what deployments record in their engine column and
// commit trailers.
const (
	EngineTerraform = "terraform"
	EngineOpenTofu  = "opentofu"
)

// Engine is the IaC engine behind --terraform-binary: terraform or OpenTofu,
// and its version as the binary reports it ("1.11.4", "1.10.10").
type Engine struct {
	Name    string
	Version string
}

// String reads as "opentofu 1.10.10", the form of the Grape-Engine trailer.
func (e Engine) String() string {
	if e.Name == "" {
		return ""
	}
	return e.Name + " " + e.Version
}

// DetectEngine asks bin which engine it is and its version. The name comes
// from the first line of `version` ("Terraform v1.11.4" / "OpenTofu
// v1.10.10"): both engines print the same `version -json` keys
// (terraform_version), so the banner is the only documented difference. The
// version comes from `version -json`, which both keep stable.
func DetectEngine(ctx context.Context, bin string) (Engine, error) {
	env := append(os.Environ(), "CHECKPOINT_DISABLE=1")
	banner, err := runVersion(ctx, bin, env, "version")
	if err != nil {
		return Engine{}, err
	}
	js, err := runVersion(ctx, bin, env, "version", "-json")
	if err != nil {
		return Engine{}, err
	}
	return parseEngine(banner, js)
}

func runVersion(ctx context.Context, bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = os.TempDir() // a run directory's .terraform must not influence it
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s %s: %w (%s)", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// parseEngine is the pure half of DetectEngine.
func parseEngine(banner, versionJSON []byte) (Engine, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(string(banner)), "\n")
	var e Engine
	switch {
	case strings.HasPrefix(first, "OpenTofu "):
		e.Name = EngineOpenTofu
	case strings.HasPrefix(first, "Terraform "):
		e.Name = EngineTerraform
	default:
		return Engine{}, fmt.Errorf("the terraform binary printed %q for `version`: it is neither terraform nor OpenTofu (set --terraform-binary to one of them)", first)
	}
	var v struct {
		Version string `json:"terraform_version"`
	}
	if err := json.Unmarshal(versionJSON, &v); err != nil {
		return Engine{}, fmt.Errorf("reading `version -json` of %s: %w", e.Name, err)
	}
	if v.Version == "" {
		return Engine{}, errors.New("`version -json` has no terraform_version")
	}
	e.Version = v.Version
	return e, nil
}

// tofuMirror lays out a filesystem mirror for OpenTofu. tofu reads a bare
// provider source ("hashicorp/aws") as registry.opentofu.org/hashicorp/aws,
// and a mirror made for terraform (`terraform providers mirror`, or one
// unpacked by hand) holds only registry.terraform.io/…. The provider binaries
// are the same, so the runner builds out (under its data directory): the mirror's tree
// as it is, plus registry.opentofu.org entries for each registry.terraform.io
// provider the mirror has no registry.opentofu.org copy of. Templates keep
// plain "hashicorp/aws" sources, so each engine reaches its own registry when
// there is no mirror.
//
// Directories are real and only the leaves (a version's os_arch directory, a
// packed .zip) are symlinks: tofu and terraform ignore symlinks inside a
// mirror except at those leaves, and links keep it free of copies.
func tofuMirror(out, mirror string) (string, error) {
	const tfHost, tofuHost = "registry.terraform.io", "registry.opentofu.org"
	// Rebuilt at every start: the mirror may have changed while stopped.
	if err := os.RemoveAll(out); err != nil {
		return "", fmt.Errorf("clearing %s: %w", out, err)
	}
	hosts, err := os.ReadDir(mirror)
	if err != nil {
		return "", fmt.Errorf("reading provider mirror %s: %w", mirror, err)
	}
	// The mirror's own hosts first, so its registry.opentofu.org entries win
	// over aliases of registry.terraform.io ones.
	for _, h := range hosts {
		if h.IsDir() {
			if err := linkProviders(filepath.Join(mirror, h.Name()), filepath.Join(out, h.Name())); err != nil {
				return "", err
			}
		}
	}
	if err := linkProviders(filepath.Join(mirror, tfHost), filepath.Join(out, tofuHost)); err != nil {
		return "", err
	}
	return out, nil
}

// linkProviders recreates srcHost's namespace/type/version directories under
// dstHost and links their leaves, skipping providers dstHost already has.
func linkProviders(srcHost, dstHost string) error {
	namespaces, err := os.ReadDir(srcHost)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading provider mirror %s: %w", srcHost, err)
	}
	for _, ns := range namespaces {
		types, _ := os.ReadDir(filepath.Join(srcHost, ns.Name())) // a stray file has none
		for _, ty := range types {
			src, dst := filepath.Join(srcHost, ns.Name(), ty.Name()), filepath.Join(dstHost, ns.Name(), ty.Name())
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			if err := linkTree(src, dst, 2); err != nil {
				return fmt.Errorf("laying out provider %s/%s for OpenTofu: %w", ns.Name(), ty.Name(), err)
			}
		}
	}
	return nil
}

// linkTree makes dst a directory whose entries link to src's, descending
// depth more levels of directories before linking.
func linkTree(src, dst string, depth int) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if depth > 1 && e.IsDir() {
			if err := linkTree(s, d, depth-1); err != nil {
				return err
			}
			continue
		}
		if err := os.Symlink(s, d); err != nil {
			return err
		}
	}
	return nil
}
