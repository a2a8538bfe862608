package gitstore_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/testsupport"
)

// The benchmark workspace: 20 clusters × 3 configs, each a 4-module
// rendering of 46 files (~140 KB), like an agent serving a mid-sized fleet.
const (
	benchClusters = 20
	benchConfigs  = 3
)

var benchHistories = []int{10, 1000, 10000}

func benchTarget(i int) (cluster, config string) {
	n := i % (benchClusters * benchConfigs)
	return fmt.Sprintf("c%02d", n/benchConfigs), []string{"prod", "staging", "dev"}[n%benchConfigs]
}

// writeHistory fills an empty bare repository with commits prior commits
// through git fast-import: the first deploys every config, each later one
// re-renders one config with changed intent (its tfvars), as the agent
// would have done.
func writeHistory(tb testing.TB, gitDir string, commits int) {
	tb.Helper()
	testsupport.RunGit(tb, "", "init", "--quiet", "--bare", "--initial-branch=main", gitDir)
	cmd := exec.Command("git", "--git-dir="+gitDir, "fast-import", "--quiet")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting git fast-import (part of the git CLI): %v", err)
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	data := func(b []byte) { fmt.Fprintf(w, "data %d\n", len(b)); w.Write(b); w.WriteString("\n") }
	file := func(path string, b []byte) { fmt.Fprintf(w, "M 100644 inline %s\n", path); data(b) }
	when := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := 1; i <= commits; i++ {
		cluster, cfg := benchTarget(i)
		fmt.Fprintf(w, "commit refs/heads/main\nmark :%d\ncommitter Grape Agent <grape@localhost> %d +0000\n", i, when+int64(i)*60)
		data([]byte(fmt.Sprintf("apply %s (cluster %s): vpc, eks, rds, karpenter\n\nGrape-Deployment: %d\n", cfg, cluster, i)))
		if i > 1 {
			fmt.Fprintf(w, "from :%d\n", i-1)
			for p, b := range rendering(i, allModules...) {
				if p == "generated.auto.tfvars.json" {
					file("clusters/"+cluster+"/"+cfg+"/"+p, b)
				}
			}
			continue
		}
		file(".gitignore", []byte("*.tfstate\n"))
		for n := 0; n < benchClusters*benchConfigs; n++ {
			c, cf := benchTarget(n)
			for p, b := range rendering(n, allModules...) {
				file("clusters/"+c+"/"+cf+"/"+p, b)
			}
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("git fast-import: %v: %s", err, stderr.String())
	}
}

// benchFixture is a workspace with history, shared by the runs of one
// sub-benchmark (the testing package calls it several times to size b.N).
type benchFixture struct {
	store  *gitstore.Store
	repo   *git.Repository // for the stock go-git push comparison
	next   int
	closer func()
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[string]*benchFixture{}
)

func fixture(b *testing.B, key string, build func() *benchFixture) *benchFixture {
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f, ok := fixtures[key]; ok {
		return f
	}
	start := time.Now()
	f := build()
	b.Logf("%s: workspace ready in %v", key, time.Since(start).Round(time.Millisecond))
	fixtures[key] = f
	return f
}

// benchRoot outlives the sub-benchmarks' b.TempDir calls.
func benchRoot(b *testing.B) string {
	dir, err := os.MkdirTemp("", "gitstore-bench-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkCommitPush measures what a deployment waits for: Commit of a
// 4-module re-render (tfvars changed) including, in remote mode, the push to
// git daemon, at 10, 1,000 and 10,000 prior commits.
func BenchmarkCommitPush(b *testing.B) {
	srv := testsupport.StartGitServer(b)
	root := benchRoot(b)
	b.Cleanup(func() { os.RemoveAll(root) })
	defer func() {
		fixturesMu.Lock()
		for k, f := range fixtures {
			f.closer()
			delete(fixtures, k)
		}
		fixturesMu.Unlock()
	}()
	for _, mode := range []string{"local", "daemon"} {
		for _, history := range benchHistories {
			key := fmt.Sprintf("%s/history=%d", mode, history)
			b.Run(key, func(b *testing.B) {
				f := fixture(b, key, func() *benchFixture {
					dir := filepath.Join(root, strings.ReplaceAll(key, "/", "-"))
					opts := gitstore.Options{Dir: dir, Logger: quietLogger()}
					if mode == "daemon" {
						name := strings.ReplaceAll(key, "/", "-") + ".git"
						writeHistory(b, srv.RepoPath(name), history)
						opts.URL, opts.Dir = srv.GitURL(name), dir+"-clone"
					} else {
						writeHistory(b, dir, history)
					}
					s, err := gitstore.Open(context.Background(), opts)
					if err != nil {
						b.Fatal(err)
					}
					return &benchFixture{store: s, next: history + 1, closer: func() { s.Close() }}
				})
				runCommits(b, f, func(ctx context.Context, c gitstore.Change) error {
					res, err := f.store.Commit(ctx, c)
					if err == nil && res.Pushed != (mode == "daemon") {
						err = fmt.Errorf("pushed=%v in %s mode", res.Pushed, mode)
					}
					return err
				})
			})
		}
	}
}

// BenchmarkStockGoGitPush is the comparison that motivated the store's own
// push: the same commit, published with go-git's Repository.Push, whose cost
// grows with the history because it walks every object reachable from the
// remote's refs to work out what not to send.
func BenchmarkStockGoGitPush(b *testing.B) {
	srv := testsupport.StartGitServer(b)
	root := benchRoot(b)
	b.Cleanup(func() { os.RemoveAll(root) })
	defer func() {
		fixturesMu.Lock()
		for k, f := range fixtures {
			f.closer()
			delete(fixtures, k)
		}
		fixturesMu.Unlock()
	}()
	for _, history := range benchHistories {
		key := fmt.Sprintf("stock/history=%d", history)
		b.Run(key, func(b *testing.B) {
			f := fixture(b, key, func() *benchFixture {
				name := fmt.Sprintf("stock-%d.git", history)
				writeHistory(b, srv.RepoPath(name), history)
				clone := filepath.Join(root, name)
				testsupport.RunGit(b, "", "clone", "--quiet", "--bare", srv.GitURL(name), clone)
				// Local mode on the clone builds the commit; go-git pushes it.
				s, err := gitstore.Open(context.Background(), gitstore.Options{Dir: clone, Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				repo, err := git.PlainOpen(clone)
				if err != nil {
					b.Fatal(err)
				}
				return &benchFixture{store: s, repo: repo, next: history + 1, closer: func() { s.Close() }}
			})
			runCommits(b, f, func(ctx context.Context, c gitstore.Change) error {
				if _, err := f.store.Commit(ctx, c); err != nil {
					return err
				}
				return f.repo.PushContext(ctx, &git.PushOptions{RemoteName: "origin",
					RefSpecs: []config.RefSpec{"refs/heads/main:refs/heads/main"}})
			})
		})
	}
}

// runCommits times b.N deployments and reports their p50 and p90.
func runCommits(b *testing.B, f *benchFixture, commit func(context.Context, gitstore.Change) error) {
	ctx := context.Background()
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := f.next
		f.next++
		cluster, cfg := benchTarget(n)
		c := change(cluster, cfg, n, rendering(n, allModules...), allModules...)
		start := time.Now()
		if err := commit(ctx, c); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(durations[len(durations)/2]), "p50-ms")
	b.ReportMetric(ms(durations[len(durations)*9/10]), "p90-ms")
}

// BenchmarkWorkspaceUpkeep commits 10,000 deployments (4-module renderings
// over 30 configs; GRAPE_BENCH_UPKEEP_COMMITS changes the count) to a local
// workspace, calling Maintain every 100 commits as the agent's upkeep does
// between deployments, and reports what packing keeps bounded: loose objects
// and packs at the end, the workspace's size, commit latency of the first
// and the last 1,000 commits (flat means history does not cost), and how
// long Maintain held the store.
// One op is the whole run; make bench runs it with -benchtime 1x.
func BenchmarkWorkspaceUpkeep(b *testing.B) {
	commits := 10_000
	if v := os.Getenv("GRAPE_BENCH_UPKEEP_COMMITS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2000 {
			b.Fatalf("GRAPE_BENCH_UPKEEP_COMMITS=%q: want a number >= 2000", v)
		}
		commits = n
	}
	ctx := context.Background()
	for range b.N {
		dir := filepath.Join(b.TempDir(), "workspace")
		s, err := gitstore.Open(ctx, gitstore.Options{Dir: dir, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, commits)
		maxLoose := 0
		var maintain []time.Duration
		for i := 1; i <= commits; i++ {
			cluster, cfg := benchTarget(i)
			start := time.Now()
			if _, err := s.Commit(ctx, change(cluster, cfg, i, rendering(i, allModules...), allModules...)); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			if i%100 == 0 {
				n, err := gitstore.LooseObjectCount(s)
				if err != nil {
					b.Fatal(err)
				}
				maxLoose = max(maxLoose, n)
				// The agent's upkeep between deployments (every 10 s).
				start := time.Now()
				if _, err := s.Maintain(ctx); err != nil {
					b.Fatal(err)
				}
				maintain = append(maintain, time.Since(start))
			}
		}
		loose, err := gitstore.LooseObjectCount(s)
		if err != nil {
			b.Fatal(err)
		}
		packs, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		pct := func(d []time.Duration, p float64) float64 {
			d = slices.Clone(d)
			slices.Sort(d)
			return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
		}
		b.ReportMetric(float64(loose), "loose-objects-end")
		b.ReportMetric(float64(maxLoose), "loose-objects-max")
		b.ReportMetric(float64(len(packs)), "packs-end")
		b.ReportMetric(float64(duBytes(b, dir))/(1<<20), "workspace-MiB")
		b.ReportMetric(pct(lat[:1000], 0.5), "p50-ms-first1k")
		b.ReportMetric(pct(lat[len(lat)-1000:], 0.5), "p50-ms-last1k")
		b.ReportMetric(pct(lat[:1000], 0.99), "p99-ms-first1k")
		b.ReportMetric(pct(lat[len(lat)-1000:], 0.99), "p99-ms-last1k")
		b.ReportMetric(pct(lat, 1), "max-commit-ms")
		b.ReportMetric(pct(maintain, 0.5), "p50-maintain-ms")
		b.ReportMetric(pct(maintain, 1), "max-maintain-ms")
	}
}

func duBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil && !d.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
