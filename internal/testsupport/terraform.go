package testsupport

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/grapehq/grape/localenv"
)

// ProviderMirror is where this machine keeps the hashicorp/aws provider for
// offline `terraform init`.
const ProviderMirror = "/opt/tf-plugins"

// TerraformBinary returns the terraform on PATH or fails the test naming it.
func TerraformBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("terraform")
	if err != nil {
		t.Fatalf("terraform not found on PATH: install terraform 1.11 to run this test")
	}
	return p
}

// TerraformCLIConfig writes a CLI config that installs providers from the
// local filesystem mirror (no registry access here) and returns its path, to
// be passed as TF_CLI_CONFIG_FILE.
func TerraformCLIConfig(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(ProviderMirror, "registry.terraform.io")); err != nil {
		t.Fatalf("provider mirror %s missing: it must hold hashicorp/aws for offline terraform init (%v)", ProviderMirror, err)
	}
	path := filepath.Join(t.TempDir(), "terraformrc")
	body := fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path = %q\n  }\n}\n", ProviderMirror)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Moto starts a moto_server for this test alone and stops it at the end.
func Moto(t testing.TB) *localenv.Moto {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := localenv.StartMoto(ctx, filepath.Join(t.TempDir(), "moto.log"))
	if err != nil {
		t.Fatalf("starting moto_server (the local AWS emulator, needed by this test): %v", err)
	}
	t.Cleanup(m.Stop)
	return m
}
