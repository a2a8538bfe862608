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

// EnvTofu names the OpenTofu binary the tests run as the second engine.
// `make test` sets it (scripts/ensure-test-deps builds and caches tofu).
const EnvTofu = "GRAPE_TEST_TOFU"

// TofuBinary returns the OpenTofu binary from GRAPE_TEST_TOFU, else the one
// scripts/ensure-test-deps caches, or fails the test naming the command that
// provides it.
func TofuBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvTofu); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v (unset it, or run scripts/ensure-test-deps)", EnvTofu, p, err)
		}
		return p
	}
	cache, err := os.UserCacheDir()
	if err == nil {
		p := filepath.Join(cache, "grape", "tofu", TofuVersion, "tofu")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("OpenTofu not found: run scripts/ensure-test-deps (builds tofu %s once and caches it; make test does this) or set %s", TofuVersion, EnvTofu)
	return ""
}

// TofuVersion is the OpenTofu release the tests run.
const TofuVersion = "v1.10.10"

// Engine is one IaC engine the tests run against.
type Engine struct {
	Name   string // "terraform" or "opentofu", as runner.Engine names them
	Binary string
}

// Engines lists terraform and OpenTofu, for tests that must hold under both.
func Engines(t testing.TB) []Engine {
	t.Helper()
	return []Engine{
		{Name: "terraform", Binary: TerraformBinary(t)},
		{Name: "opentofu", Binary: TofuBinary(t)},
	}
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
