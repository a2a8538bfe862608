package runner

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grapehq/grape/internal/testsupport"
)

// BenchmarkVPCApplyDiff measures what the attribute-level plan diff adds to
// a deployment: plan + apply of the templates set's VPC module (19
// resources) against moto, with the diff on and off, alternating within
// each iteration so load on the shared machine hits both alike. Each apply
// is destroyed again, untimed. Reports the mean wall time of each and their
// ratio (the bound: diff-on ≤ 1.05 × diff-off).
//
//	go test ./runner -run '^$' -bench BenchmarkVPCApplyDiff -benchtime 3x
func BenchmarkVPCApplyDiff(b *testing.B) {
	testsupport.TerraformCLIConfig(b)
	moto := testsupport.Moto(b)
	ctx := context.Background()
	r := newBenchRunner(b, Config{ProviderMirror: testsupport.ProviderMirror, ExtraEnv: moto.Env("us-east-1")})
	dir := filepath.Join(b.TempDir(), "run")
	if err := os.CopyFS(filepath.Join(dir, "vpc"), os.DirFS(filepath.Join("..", "templates", "vpc"))); err != nil {
		b.Fatal(err)
	}
	root := `provider "aws" {
  region = "us-east-1"
}

module "vpc" {
  source             = "./vpc"
  availability_zones = ["us-east-1a", "us-east-1b"]
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(root), 0o644); err != nil {
		b.Fatal(err)
	}
	j := Job{Dir: dir, Stdout: io.Discard, Stderr: io.Discard}
	if err := r.Init(ctx, j); err != nil {
		b.Fatal(err)
	}
	applyOnce := func(noDiff bool) time.Duration {
		start := time.Now()
		res, err := r.Plan(ctx, j, PlanOptions{NoDiff: noDiff})
		if err != nil {
			b.Fatal(err)
		}
		if res.Summary.Add == 0 {
			b.Fatalf("nothing to add: %+v", res.Summary)
		}
		if err := r.Apply(ctx, j, res.PlanFile); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		defer b.StartTimer()
		res, err = r.Plan(ctx, j, PlanOptions{Destroy: true, NoDiff: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Apply(ctx, j, res.PlanFile); err != nil {
			b.Fatal(err)
		}
		return took
	}
	var on, off time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first, so neither always runs on a warmer
		// machine.
		if i%2 == 0 {
			on += applyOnce(false)
			off += applyOnce(true)
		} else {
			off += applyOnce(true)
			on += applyOnce(false)
		}
	}
	b.ReportMetric(on.Seconds()/float64(b.N), "s-diff-on")
	b.ReportMetric(off.Seconds()/float64(b.N), "s-diff-off")
	b.ReportMetric(on.Seconds()/off.Seconds(), "on/off")
}
