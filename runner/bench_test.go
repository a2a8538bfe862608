package runner

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grapehq/grape/internal/testsupport"
)

// BenchmarkInit measures `terraform init` of a fresh run directory with the
// real AWS provider (hashicorp/aws 5.100.0, ~675 MB unpacked), with and
// without the shared plugin cache, from the machine's unpacked mirror and
// from a packed (zipped) mirror, which installs like a registry download.
// Reports time per init and disk used by the run directory (du: allocated
// blocks, symlinks not followed).
//
//	go test ./runner -run '^$' -bench BenchmarkInit -benchtime 3x
func BenchmarkInit(b *testing.B) {
	testsupport.TerraformCLIConfig(b) // fails clearly when the mirror is missing
	packed := packedMirror(b)
	for _, mirror := range []struct{ name, dir string }{
		{"unpacked-mirror", testsupport.ProviderMirror},
		{"packed-mirror", packed},
	} {
		for _, cached := range []bool{false, true} {
			name := mirror.name + "/no-cache"
			if cached {
				name = mirror.name + "/shared-cache"
			}
			b.Run(name, func(b *testing.B) {
				r := newBenchRunner(b, Config{ProviderMirror: mirror.dir})
				if !cached {
					body, err := cliConfig("", mirror.dir, nil, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := os.WriteFile(r.CLIConfigFile(), []byte(body), 0o644); err != nil {
						b.Fatal(err)
					}
				} else {
					benchInit(b, r) // fill the cache, as the agent's first run does
				}
				var disk int64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					disk += benchInit(b, r)
				}
				b.ReportMetric(float64(disk)/float64(b.N)/1024, "KB/rundir")
				b.ReportMetric(float64(duBytes(b, r.cacheDir))/(1<<20), "MB-cache")
			})
		}
	}
}

// benchInit times one init of a fresh copy of the aws module and returns
// the run directory's disk use; setup and cleanup are not timed.
func benchInit(b *testing.B, r *Runner) int64 {
	b.StopTimer()
	dir := filepath.Join(b.TempDir(), "run")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "modules", "aws"))); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	if err := r.Init(context.Background(), Job{Dir: dir}); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	n := duBytes(b, dir)
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	return n
}

// BenchmarkPlanOverhead compares a runner Plan (plan -json -out, then
// show -json of the plan, plus terraform-exec's version check and the
// runner's rendering) with the same two terraform commands run directly, on
// a terraform_data module, so the difference is the runner's own cost.
func BenchmarkPlanOverhead(b *testing.B) {
	r := newBenchRunner(b, Config{})
	dir := filepath.Join(b.TempDir(), "run")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "modules", "basic"))); err != nil {
		b.Fatal(err)
	}
	j := Job{Dir: dir, Stdout: io.Discard}
	if err := r.Init(context.Background(), j); err != nil {
		b.Fatal(err)
	}
	b.Run("runner", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := r.Plan(context.Background(), j, PlanOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("terraform-cli", func(b *testing.B) {
		env := append(os.Environ(), "TF_CLI_CONFIG_FILE="+r.CLIConfigFile(), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
		for i := 0; i < b.N; i++ {
			plan := exec.Command(r.Binary(), "plan", "-json", "-no-color", "-input=false", "-detailed-exitcode", "-out=cli.tfplan")
			plan.Dir, plan.Env = dir, env
			if err := plan.Run(); err != nil && plan.ProcessState.ExitCode() != 2 {
				b.Fatal(err)
			}
			show := exec.Command(r.Binary(), "show", "-json", "-no-color", "cli.tfplan")
			show.Dir, show.Env = dir, env
			if err := show.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func newBenchRunner(b *testing.B, cfg Config) *Runner {
	b.Helper()
	cfg.TerraformBinary = testsupport.TerraformBinary(b)
	cfg.DataDir = b.TempDir()
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// packedMirror builds, once per machine, a packed filesystem mirror of the
// provider in the unpacked mirror (an uncompressed zip: terraform must
// extract it, as it does a registry download). It is kept in the temp dir
// across benchmark runs.
func packedMirror(b *testing.B) string {
	b.Helper()
	const (
		provider = "registry.terraform.io/hashicorp/aws"
		version  = "5.100.0"
		platform = "linux_amd64"
	)
	root := filepath.Join(os.TempDir(), "grape-bench-packed-mirror-"+version)
	zipPath := filepath.Join(root, provider, fmt.Sprintf("terraform-provider-aws_%s_%s.zip", version, platform))
	if _, err := os.Stat(zipPath); err == nil {
		return root
	}
	src := filepath.Join(testsupport.ProviderMirror, provider, version, platform)
	if err := os.MkdirAll(filepath.Dir(zipPath), 0o755); err != nil {
		b.Fatal(err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(zipPath), ".zip-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	zw := zip.NewWriter(tmp)
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		hdr.Name = filepath.Base(p)
		hdr.Method = zip.Store
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), zipPath)
	}
	if err != nil {
		b.Fatalf("building packed provider mirror: %v", err)
	}
	return root
}

// duBytes is what du reports for a tree: allocated blocks, symlinks counted
// as links.
func duBytes(b *testing.B, root string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkInitCache compares, alternating in each iteration, a full
// `terraform init` of a fresh run dir of the aws module with a committed
// lock file and the shared plugin cache (what every run did before the init
// cache) with a run whose .terraform is reused from the config's init cache
// (a fingerprint and a ~40 KB copy, no terraform process). Both fill the
// cache first, as an agent's first run of a config does.
//
//	go test ./runner -run '^$' -bench BenchmarkInitCache -benchtime 3x
func BenchmarkInitCache(b *testing.B) {
	r := newBenchRunner(b, Config{ProviderMirror: testsupport.ProviderMirror})
	lock, err := os.ReadFile(filepath.Join("..", "templates", LockFile))
	if err != nil {
		b.Fatal(err)
	}
	lock = []byte(strings.Replace(string(lock), `constraints = ">= 5.70.0, < 6.0.0"`, `constraints = "5.100.0"`, 1))
	cache := filepath.Join(b.TempDir(), "init-cache")
	run := func(keep bool) time.Duration {
		dir := filepath.Join(b.TempDir(), "run")
		if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "modules", "aws"))); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, LockFile), lock, 0o644); err != nil {
			b.Fatal(err)
		}
		j := Job{Dir: dir}
		if keep {
			j.InitCache = cache
		}
		start := time.Now()
		if err := r.Init(context.Background(), j); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		_ = os.RemoveAll(dir)
		return took
	}
	run(true) // fills the plugin cache and the init cache
	b.ResetTimer()
	var full, reused time.Duration
	for range b.N {
		full += run(false)
		reused += run(true)
	}
	b.ReportMetric(full.Seconds()/float64(b.N), "full-init-s")
	b.ReportMetric(reused.Seconds()/float64(b.N), "reused-init-s")
}
