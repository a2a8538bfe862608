package gitstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/testsupport"
)

// BenchmarkNotePush measures what the end of a deployment costs the agent:
// appending an event to a commit's note and pushing refs/notes/grape to git
// daemon, with 10 and 1,000 notes already on the ref. bare-git is the git
// CLI doing the same (git notes append, git push) in the same run.
func BenchmarkNotePush(b *testing.B) {
	ctx := context.Background()
	srv := testsupport.StartGitServer(b)
	for _, existing := range []int{10, 1000} {
		name := fmt.Sprintf("notes-%d.git", existing)
		srv.CreateRepo(b, name)
		s, err := gitstore.Open(ctx, gitstore.Options{URL: srv.GitURL(name), Dir: filepath.Join(b.TempDir(), "clone"), Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < existing; i++ {
			if err := s.AppendNote(ctx, fmt.Sprintf("%040x", i+1), "Grape apply succeeded\nDeployment: old\n"); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.PushPendingNotes(ctx); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("grape/notes=%d", existing), func(b *testing.B) {
			timeEach(b, func(i int) error {
				return s.AddNote(ctx, res.SHA, fmt.Sprintf("Grape apply succeeded\nDeployment: %d\n", i))
			})
		})
		cli := filepath.Join(b.TempDir(), "cli")
		testsupport.RunGit(b, "", "clone", "--quiet", "--bare", srv.GitURL(name), cli)
		b.Run(fmt.Sprintf("bare-git/notes=%d", existing), func(b *testing.B) {
			timeEach(b, func(i int) error {
				if _, err := testsupport.GitOutput(ctx, cli, "fetch", "--quiet", "origin", "+refs/notes/grape:refs/notes/grape"); err != nil {
					return err
				}
				if _, err := testsupport.GitOutput(ctx, cli, "notes", "--ref=grape", "append", "-m", fmt.Sprintf("cli %d", i), res.SHA); err != nil {
					return err
				}
				_, err := testsupport.GitOutput(ctx, cli, "push", "--quiet", "origin", "refs/notes/grape")
				return err
			})
		})
		s.Close()
	}
}

// timeEach runs f b.N times and reports the p50 and p90.
func timeEach(b *testing.B, f func(i int) error) {
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := f(i); err != nil {
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
