package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrForbiddenFile is wrapped by the error Commit returns for a file that must
// never be committed: terraform state, a plan, a provider cache, credentials.
var ErrForbiddenFile = errors.New("file must not be committed")

// ErrInvalidPath is wrapped by the error Commit returns for a cluster id,
// config name or file path that is not a clean relative path.
var ErrInvalidPath = errors.New("invalid path")

// workspaceGitignore is the root .gitignore of a workspace. The store never
// uses a working tree, so it is documentation for people who clone the
// workspace and a guard for anyone who commits to it by hand.
const workspaceGitignore = `# Grape workspace: rendered Terraform configurations, one commit per deployment.
# Terraform runs on a copy of a commit in a separate run directory; its state,
# plans and provider caches never belong here.
*.tfstate
*.tfstate.*
*.tfplan
tfplan
.terraform/
terraform.tfstate.d/
crash.log
crash.*.log
.terraformrc
terraform.rc
`

// segmentRE is what a cluster id or config name may look like: one path
// segment that is safe on every filesystem and in every shell.
var segmentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validSegment(kind, s string) error {
	if !segmentRE.MatchString(s) || strings.HasSuffix(s, ".") {
		return fmt.Errorf("%w: %s %q must match %s", ErrInvalidPath, kind, s, segmentRE)
	}
	return nil
}

// checkFilePath accepts a clean relative slash path whose segments git fsck
// --strict accepts and a checkout can write anywhere.
func checkFilePath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%w: %q is not a relative file path", ErrInvalidPath, p)
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return fmt.Errorf("%w: %q has an empty, . or .. segment", ErrInvalidPath, p)
		case strings.EqualFold(seg, ".git"):
			return fmt.Errorf("%w: %q contains a .git segment", ErrInvalidPath, p)
		case strings.ContainsAny(seg, "\\\x00\n\r"):
			return fmt.Errorf("%w: %q contains a backslash or control character", ErrInvalidPath, p)
		case len(seg) > 255:
			return fmt.Errorf("%w: %q has a segment longer than 255 bytes", ErrInvalidPath, p)
		}
	}
	return nil
}

// forbiddenPath says why p must not be committed, or "" if it may.
func forbiddenPath(p string) string {
	segs := strings.Split(p, "/")
	for _, seg := range segs[:len(segs)-1] {
		switch seg {
		case ".terraform":
			return "it is inside .terraform/ (provider and module caches)"
		case "terraform.tfstate.d":
			return "it is inside terraform.tfstate.d/ (workspace state)"
		}
	}
	base := segs[len(segs)-1]
	lower := strings.ToLower(base)
	switch {
	case lower == ".terraform":
		return "it is a .terraform cache"
	case strings.HasSuffix(lower, ".tfstate") || strings.Contains(lower, ".tfstate."):
		return "it is terraform state"
	case strings.HasSuffix(lower, ".tfplan") || lower == "tfplan":
		return "it is a terraform plan (plans hold sensitive values in clear text)"
	case lower == ".terraformrc" || lower == "terraform.rc" || lower == "credentials.tfrc.json":
		return "it is a terraform CLI configuration (may hold registry tokens)"
	case lower == ".netrc" || lower == ".git-credentials":
		return "it is a credentials file"
	}
	return ""
}

var (
	privateKeyRE = regexp.MustCompile(`-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----`)
	// AWS access key ids: long-term (AKIA) and temporary (ASIA). The
	// documentation's example keys end in EXAMPLE and are allowed.
	awsKeyRE = regexp.MustCompile(`\b(AKIA|ASIA)[0-9A-Z]{16}\b`)
)

// forbiddenContent says why content must not be committed, or "" if it may.
// It catches the accidents that matter most — a state file under another
// name, a private key, an AWS key — not every conceivable secret; sensitive
// variable values are kept out by the renderer.
func forbiddenContent(content []byte) string {
	// Substring checks first: the regular expressions are ten times
	// slower, and almost every file matches neither.
	if bytes.Contains(content, []byte("PRIVATE KEY")) && privateKeyRE.Match(content) {
		return "it contains a private key"
	}
	if bytes.Contains(content, []byte("AKIA")) || bytes.Contains(content, []byte("ASIA")) {
		for _, m := range awsKeyRE.FindAll(content, -1) {
			if !bytes.HasSuffix(m, []byte("EXAMPLE")) {
				return "it contains an AWS access key id"
			}
		}
	}
	if bytes.Contains(content, []byte(`"lineage"`)) && bytes.Contains(content, []byte(`"terraform_version"`)) &&
		bytes.Contains(content, []byte(`"serial"`)) {
		return "it looks like terraform state (lineage, serial, terraform_version)"
	}
	return ""
}

// checkFiles validates a rendering before anything is written.
func checkFiles(files map[string][]byte) error {
	for p, content := range files {
		if err := checkFilePath(p); err != nil {
			return err
		}
		if why := forbiddenPath(p); why != "" {
			return fmt.Errorf("%w: %s: %s", ErrForbiddenFile, p, why)
		}
		if why := forbiddenContent(content); why != "" {
			return fmt.Errorf("%w: %s: %s", ErrForbiddenFile, p, why)
		}
	}
	// A path cannot be both a file and a directory.
	for p := range files {
		for dir := p; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if _, ok := files[dir]; ok {
				return fmt.Errorf("%w: %q is a file and also the directory of %q", ErrInvalidPath, dir, p)
			}
		}
	}
	return nil
}
