package templates

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/grapehq/grape/internal/testsupport"
)

// TestLayout checks the embedded set has a version and, per module, the
// files a normal Terraform module carries. (The render package parses and
// validates the modules themselves.)
func TestLayout(t *testing.T) {
	v, err := fs.ReadFile(FS(), "VERSION")
	if err != nil || strings.TrimSpace(string(v)) == "" {
		t.Fatalf("VERSION missing or empty: %v", err)
	}
	for _, m := range []string{"vpc", "eks", "rds", "karpenter"} {
		for _, f := range []string{"variables.tf", "main.tf", "outputs.tf", "versions.tf", "README.md"} {
			if _, err := fs.Stat(FS(), m+"/"+f); err != nil {
				t.Errorf("%s/%s: %v", m, f, err)
			}
		}
	}
}

// TestFormatted runs terraform fmt -check over the module sources, so the
// copies in every rendering are fmt-clean too.
func TestFormatted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testsupport.TerraformBinary(t), "fmt", "-check", "-recursive", "-diff", "-no-color", ".")
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+testsupport.TerraformCLIConfig(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("terraform fmt -check: %v\n%s", err, out)
	}
}
