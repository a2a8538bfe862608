package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// ErrCLIConfigConflict is returned by New when the operator's CLI config sets
// something the agent's own flags also set.
var ErrCLIConfigConflict = errors.New("terraform CLI config conflicts with the agent's settings")

// operatorConfig is the operator's own CLI config (--terraform-cli-config or
// an inherited TF_CLI_CONFIG_FILE), kept in the config the runner writes.
type operatorConfig struct {
	name string // the file's path, for messages
	body []byte
}

// cliConfig renders the terraform CLI config the runner points every command
// at (TF_CLI_CONFIG_FILE), so an operator's ~/.terraformrc cannot change how
// the agent installs providers unnoticed; an operator who wants settings of
// their own (credentials, host blocks, network_mirror, dev_overrides) names
// the file, and its blocks are appended after the agent's settings.
//
// plugin_cache_may_break_dependency_lock_file: without it terraform >= 1.4
// ignores the cache for any provider the dependency lock file does not
// already list with a checksum, which is every provider in a rendered root
// module without a committed .terraform.lock.hcl, so the cache would never be
// used. The lock file a run writes is thrown away with the run directory.
//
// mirrorFor maps a filesystem mirror path to the one the engine reads (the
// OpenTofu layout, see tofuMirror); nil keeps paths as they are.
func cliConfig(cacheDir, mirror string, op *operatorConfig, mirrorFor func(string) (string, error)) (string, error) {
	for _, p := range []string{cacheDir, mirror} {
		if strings.ContainsAny(p, "\"\\\n\r\t") || strings.Contains(p, "${") || strings.Contains(p, "%{") {
			return "", fmt.Errorf("path %q cannot be written into a terraform CLI config", p)
		}
	}
	var opBody []byte
	if op != nil {
		var err error
		if opBody, err = mergeOperator(*op, mirror != "", mirrorFor); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	b.WriteString("# Written by the Grape agent at start-up; edits are overwritten.\n")
	if cacheDir != "" {
		fmt.Fprintf(&b, "plugin_cache_dir = \"%s\"\n", cacheDir)
		b.WriteString("plugin_cache_may_break_dependency_lock_file = true\n")
	}
	b.WriteString("disable_checkpoint = true\n")
	if mirror != "" {
		// Only the mirror: an operator who names one runs air-gapped, and a
		// silent fallback to the registry would hide a missing provider.
		fmt.Fprintf(&b, "\nprovider_installation {\n  filesystem_mirror {\n    path = \"%s\"\n  }\n}\n", mirror)
	}
	if op != nil {
		fmt.Fprintf(&b, "\n# From the operator's CLI config %s:\n", op.name)
		b.Write(opBody)
	}
	return b.String(), nil
}

// agentOwned are top-level settings of the agent's own that an operator's
// file may not set, and why. disable_checkpoint and the lock-file setting are
// dropped from the operator's file instead: the agent's values are the only
// sensible ones for an unattended run.
var agentOwned = map[string]string{
	"plugin_cache_dir": "the agent keeps its own plugin cache in <data dir>/plugin-cache, shared by its runs and locked while one installs",
}

// mergeOperator checks the operator's CLI config and returns it ready to
// append: conflicts refused, settings the agent sets itself removed, and
// filesystem mirror paths mapped for the engine. Its contents are never put
// into an error: credentials blocks hold tokens.
func mergeOperator(op operatorConfig, agentMirror bool, mirrorFor func(string) (string, error)) ([]byte, error) {
	f, diags := hclwrite.ParseConfig(op.body, op.name, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("reading terraform CLI config %s: %s (fix its syntax; terraform would refuse it too)", op.name, diagPositions(diags))
	}
	body := f.Body()
	for name, why := range agentOwned {
		if body.GetAttribute(name) != nil {
			return nil, fmt.Errorf("%w: %s sets %s; remove it: %s", ErrCLIConfigConflict, op.name, name, why)
		}
	}
	body.RemoveAttribute("disable_checkpoint")
	body.RemoveAttribute("plugin_cache_may_break_dependency_lock_file")
	for _, blk := range body.Blocks() {
		if blk.Type() != "provider_installation" {
			continue
		}
		if agentMirror {
			return nil, fmt.Errorf("%w: both %s and --provider-mirror set provider_installation; keep one: drop --provider-mirror to use the file's, or remove the file's provider_installation block", ErrCLIConfigConflict, op.name)
		}
		if mirrorFor == nil {
			continue
		}
		for _, m := range blk.Body().Blocks() {
			if m.Type() != "filesystem_mirror" {
				continue
			}
			attr := m.Body().GetAttribute("path")
			if attr == nil {
				continue
			}
			path, ok := literalString(attr)
			if !ok {
				continue // not a plain string; terraform will say what it makes of it
			}
			mapped, err := mirrorFor(path)
			if err != nil {
				return nil, fmt.Errorf("filesystem_mirror %s in %s: %w", path, op.name, err)
			}
			m.Body().SetAttributeValue("path", cty.StringVal(mapped))
		}
	}
	return f.Bytes(), nil
}

// literalString reads an attribute whose expression is a plain string.
func literalString(attr *hclwrite.Attribute) (string, bool) {
	src := attr.Expr().BuildTokens(nil).Bytes()
	expr, diags := hclsyntax.ParseExpression(src, "", hcl.InitialPos)
	if diags.HasErrors() {
		return "", false
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() || !v.Type().Equals(cty.String) || v.IsNull() {
		return "", false
	}
	return v.AsString(), true
}

// diagPositions names where a config is wrong and what is wrong, without the
// source text HCL may quote in a diagnostic's detail.
func diagPositions(diags hcl.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		at := ""
		if d.Subject != nil {
			at = fmt.Sprintf("line %d: ", d.Subject.Start.Line)
		}
		parts = append(parts, at+d.Summary)
	}
	return strings.Join(parts, "; ")
}

// writeFileAtomic replaces path so a terraform starting concurrently never
// reads a half-written config.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp.Name(), path, err)
	}
	return nil
}
