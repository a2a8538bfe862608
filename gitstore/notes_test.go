package gitstore_test

import (
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/testsupport"
)

// remoteNote reads the note on sha from a fresh clone of url, as a reviewer
// would: git fetch of refs/notes/grape, then git log --notes=grape.
func remoteNote(t *testing.T, url, sha string) string {
	t.Helper()
	dir := t.TempDir()
	testsupport.RunGit(t, "", "clone", "--quiet", "--bare", url, dir)
	testsupport.RunGit(t, dir, "fetch", "--quiet", "origin", "refs/notes/grape:refs/notes/grape")
	return testsupport.RunGit(t, dir, "log", "-1", "--notes=grape", "--format=%N", sha)
}

func TestNotesFromTwoAgentsAndAPersonAreAllKept(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	for _, tc := range []struct{ name, repo, url string }{
		{"git daemon", "daemon.git", srv.GitURL("daemon.git")},
		{"smart http", "http.git", srv.HTTPURL("http.git")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.CreateRepo(t, tc.repo)
			plain := srv.GitURL(tc.repo)
			opts := func() gitstore.Options {
				o := gitstore.Options{URL: tc.url, Dir: filepath.Join(t.TempDir(), "clone")}
				if strings.HasPrefix(tc.url, "http") {
					o.Auth = gitstore.AuthOptions{Username: srv.Username, Password: srv.Password}
				}
				return o
			}
			a, b := openStore(t, opts()), openStore(t, opts())
			c1, err := a.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
			require.NoError(t, err)
			c2, err := b.Commit(ctx, change("eu-1", "stage", 2, rendering(2, "vpc"), "vpc"))
			require.NoError(t, err)

			// A person annotates c2 with the git CLI and pushes first.
			person := testsupport.NewColleague(t, plain)
			testsupport.RunGit(t, person.Dir, "fetch", "--quiet", "origin", "refs/notes/*:refs/notes/*")
			testsupport.RunGit(t, person.Dir, "notes", "--ref=grape", "append", "-m", "Reviewed-By: carol", c2.SHA)
			testsupport.RunGit(t, person.Dir, "push", "--quiet", "origin", "refs/notes/grape")
			personNotes := testsupport.RunGit(t, person.Dir, "rev-parse", "refs/notes/grape")

			// Both agents note both commits at once.
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for i, s := range []*gitstore.Store{a, b} {
				for _, sha := range []string{c1.SHA, c2.SHA} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- s.AddNote(ctx, sha, "Grape apply succeeded\nAgent: agent-"+string(rune('a'+i))+"\n")
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			for _, sha := range []string{c1.SHA, c2.SHA} {
				note := remoteNote(t, plain, sha)
				assert.Equal(t, 1, strings.Count(note, "Agent: agent-a"), "agent a's event once on %s:\n%s", sha, note)
				assert.Equal(t, 1, strings.Count(note, "Agent: agent-b"), "agent b's event once on %s:\n%s", sha, note)
			}
			assert.Contains(t, remoteNote(t, plain, c2.SHA), "Reviewed-By: carol", "the person's note survives")
			for _, s := range []*gitstore.Store{a, b} {
				n, err := s.PendingNotes(ctx)
				require.NoError(t, err)
				assert.Zero(t, n)
			}
			r := reviewer{t, srv.RepoPath(tc.repo)}
			r.fsck()
			// No push was forced: the person's notes commit is still in the
			// remote's notes history.
			r.git("merge-base", "--is-ancestor", personNotes, "refs/notes/grape")
		})
	}
}

func TestNoteWaitsWhileTheRemoteIsDownAndArrivesLater(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	u, err := neturl.Parse(srv.GitURL("ws.git"))
	require.NoError(t, err)
	proxy := testsupport.StartFaultProxy(t, u.Host)
	url := proxy.URL(srv.GitURL("ws.git"))
	dir := filepath.Join(t.TempDir(), "clone")
	opts := gitstore.Options{URL: url, Dir: dir, NetworkRetry: 500 * time.Millisecond}
	s := openStore(t, opts)
	c1, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	proxy.Down()
	err = s.AddNote(ctx, c1.SHA, "Grape apply succeeded\n")
	var pending *gitstore.NotePendingError
	require.ErrorAs(t, err, &pending)
	assert.Equal(t, 1, pending.Pending)
	require.ErrorAs(t, s.AddNote(ctx, c1.SHA, "Grape drift check: in_sync\n"), &pending)
	assert.Equal(t, 2, pending.Pending)
	n, err := s.PushPendingNotes(ctx)
	require.Error(t, err, "the remote is still down")
	assert.Equal(t, 2, n)

	// The agent restarts meanwhile: the pending notes are in its clone.
	require.NoError(t, s.Close())
	s = openStore(t, opts)
	n, err = s.PendingNotes(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	note, err := s.Note(ctx, c1.SHA)
	require.NoError(t, err)
	assert.Equal(t, "Grape apply succeeded\n\nGrape drift check: in_sync\n", note)

	proxy.Up()
	n, err = s.PushPendingNotes(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Equal(t, "Grape apply succeeded\n\nGrape drift check: in_sync", remoteNote(t, srv.GitURL("ws.git"), c1.SHA))
	n, err = s.PushPendingNotes(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left to push")
}

func TestNotesRefuseSecrets(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "ws")
	s := openStore(t, gitstore.Options{Dir: dir})
	c1, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	err = s.AddNote(ctx, c1.SHA, "Error: AKIAIOSFODNN7ABCDEFG rejected\n")
	require.ErrorIs(t, err, gitstore.ErrForbiddenFile)
	require.Error(t, s.AddNote(ctx, "abc", "x"))
	require.NoError(t, s.AddNote(ctx, c1.SHA, "Error: pushing to https://bot:hunter22@git.example.com/ws.git failed\n"))
	note, err := s.Note(ctx, c1.SHA)
	require.NoError(t, err)
	assert.NotContains(t, note, "hunter22", "URL credentials are redacted")
	// A local workspace reads as a person expects.
	out := testsupport.RunGit(t, "", "--git-dir="+dir, "log", "-1", "--notes=grape", "--format=%N", c1.SHA)
	assert.Contains(t, out, "Error: pushing to")
}

func TestForcePushedBranchIsRefusedUntilAccepted(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	var last string
	for i := 1; i <= 3; i++ {
		c := change("eu-1", "prod", i, rendering(i, "vpc"), "vpc")
		c.Require = last
		res, err := s.Commit(ctx, c)
		require.NoError(t, err)
		last = res.SHA
	}
	r := reviewer{t, srv.RepoPath("ws.git")}
	require.Equal(t, 3, r.count("main"))

	// An attacker replaces the branch with an unrelated commit.
	attacker := filepath.Join(t.TempDir(), "attacker")
	testsupport.RunGit(t, "", "init", "--quiet", "-b", "main", attacker)
	require.NoError(t, os.WriteFile(filepath.Join(attacker, "README"), []byte("nothing to see\n"), 0o644))
	testsupport.RunGit(t, attacker, "add", ".")
	testsupport.RunGit(t, attacker, "commit", "--quiet", "-m", "clean slate")
	testsupport.RunGit(t, attacker, "push", "--quiet", "--force", srv.GitURL("ws.git"), "main")
	forced := r.git("rev-parse", "main")

	c := change("eu-1", "prod", 4, rendering(4, "vpc"), "vpc")
	c.Require = last
	_, err := s.Commit(ctx, c)
	var hist *gitstore.HistoryError
	require.ErrorAs(t, err, &hist)
	assert.Equal(t, last, hist.Missing)
	assert.Equal(t, forced, hist.Tip)
	assert.Contains(t, err.Error(), last, "names the missing commit")
	assert.Contains(t, err.Error(), forced, "names the new tip")
	assert.Contains(t, err.Error(), "grape workspace accept-rewrite --cluster eu-1")
	assert.Equal(t, forced, r.git("rev-parse", "main"), "nothing was pushed")
	assert.Equal(t, 1, r.count("main"))

	// The operator accepted the rewrite, vouching for the new tip.
	c.Require = forced
	res, err := s.Commit(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, forced, r.git("rev-parse", "main^"), "the next commit builds on the accepted tip")
	assert.Equal(t, res.SHA, r.git("rev-parse", "main"))

	// A deleted branch is a rewrite too.
	r.git("update-ref", "-d", "refs/heads/main")
	c = change("eu-1", "prod", 5, rendering(5, "vpc"), "vpc")
	c.Require = res.SHA
	_, err = s.Commit(ctx, c)
	require.ErrorAs(t, err, &hist)
	assert.Contains(t, err.Error(), "deleted")
}

func TestEventTextGolden(t *testing.T) {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	events := []gitstore.Event{
		{Deployment: "5f1c0000-0000-4000-8000-000000000001", ClusterID: "eu-1", Config: "prod", ConfigVersion: 3,
			Action: "apply", Status: "succeeded", Plan: &gitstore.PlanCounts{Add: 2, Change: 1},
			Changed: []string{"+ module.vpc.aws_vpc.this", "+ module.vpc.aws_subnet.a[0]", "~ module.vpc.aws_route_table.public"},
			Cost:    "+$32.40/month", RequestedBy: "alice", ApprovedBy: "bob", Comment: "ok for the\nfreeze window",
			Engine: "terraform 1.11.4", Agent: "agent-1", Started: start, Finished: start.Add(90 * time.Second)},
		{Deployment: "5f1c0000-0000-4000-8000-000000000002", ClusterID: "eu-1", Config: "prod", ConfigVersion: 4,
			Action: "apply", Status: "failed", ErrorKind: "git", Error: "git history rewritten: …\nForged: line",
			RequestedBy: "alice", Engine: "terraform 1.11.4", Started: start, Finished: start.Add(2 * time.Second)},
		{Deployment: "5f1c0000-0000-4000-8000-000000000003", ClusterID: "eu-1", Config: "prod", Action: "drift",
			Status: "succeeded", Drift: "drifted", Drifted: []string{"module.vpc.aws_vpc.this (tags)"},
			Engine: "terraform 1.11.4", Started: start, Finished: start.Add(11 * time.Second)},
	}
	var got strings.Builder
	for _, e := range events {
		got.WriteString(e.Text())
		got.WriteString("\n")
	}
	golden := filepath.Join("testdata", "note_events.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), got.String())
}
