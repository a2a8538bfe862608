package plandiff

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"

	"github.com/grapehq/grape/internal/testsupport"
)

// BenchmarkRender measures Build + Render of recorded plans (the VPC module
// of the templates set planned from scratch, and an update of a VPC, a
// subnet, a security group and an SSM parameter). JSON decoding is not
// counted: the runner has the parsed plan already.
//
//	go test ./plandiff -run '^$' -bench BenchmarkRender
func BenchmarkRender(b *testing.B) {
	for _, name := range []string{"vpc_create", "aws_update"} {
		p, _ := loadPlan(b, name)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				Build(p)
				if err := Render(io.Discard, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRenderVsTerraformShow compares the diff with what it saves:
// asking terraform to render the saved plan (`terraform show -no-color
// PLAN`), on a terraform_data module (no provider to start, so this is
// terraform's floor; with the AWS provider show takes ~3 s more).
func BenchmarkRenderVsTerraformShow(b *testing.B) {
	bin := testsupport.TerraformBinary(b)
	dir := b.TempDir()
	main, err := os.ReadFile(filepath.Join("testdata", "fixtures", "tfdata", "v2", "main.tf"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), main, 0o644); err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1", "TF_VAR_password=bench")
	tf := func(args ...string) []byte {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("terraform %v: %v", args, err)
		}
		return out
	}
	tf("init", "-input=false", "-no-color")
	tf("plan", "-input=false", "-no-color", "-out=p.tfplan")
	var p tfjson.Plan
	if err := json.Unmarshal(tf("show", "-json", "p.tfplan"), &p); err != nil {
		b.Fatal(err)
	}
	b.Run("plandiff", func(b *testing.B) {
		for b.Loop() {
			Build(&p)
			if err := Render(io.Discard, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("terraform-show", func(b *testing.B) {
		for b.Loop() {
			tf("show", "-no-color", "p.tfplan")
		}
	})
}
