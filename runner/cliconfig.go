package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cliConfig renders the terraform CLI config the runner points every command
// at (TF_CLI_CONFIG_FILE), so an operator's ~/.terraformrc cannot change how
// the agent installs providers.
//
// plugin_cache_may_break_dependency_lock_file: without it terraform >= 1.4
// ignores the cache for any provider the dependency lock file does not
// already list with a checksum, which is every provider in a rendered root
// module without a committed .terraform.lock.hcl, so the cache would never be
// used. The lock file a run writes is thrown away with the run directory.
func cliConfig(cacheDir, mirror string) (string, error) {
	for _, p := range []string{cacheDir, mirror} {
		if strings.ContainsAny(p, "\"\\\n\r\t") || strings.Contains(p, "${") || strings.Contains(p, "%{") {
			return "", fmt.Errorf("path %q cannot be written into a terraform CLI config", p)
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
	return b.String(), nil
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
