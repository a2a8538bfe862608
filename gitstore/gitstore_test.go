package gitstore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/testsupport"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of go-git's shared HTTP client.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// reviewer looks at a repository with the git CLI, as a person would.
type reviewer struct {
	t      testing.TB
	gitDir string
}

func (r reviewer) git(args ...string) string {
	r.t.Helper()
	return testsupport.RunGit(r.t, "", append([]string{"--git-dir=" + r.gitDir}, args...)...)
}

// fsck fails the test unless git fsck --strict finds the repository sound.
func (r reviewer) fsck() {
	r.t.Helper()
	r.git("fsck", "--strict", "--no-progress", "--no-dangling")
}

func (r reviewer) count(rev string) int {
	r.t.Helper()
	n, err := strconv.Atoi(r.git("rev-list", "--count", rev))
	require.NoError(r.t, err)
	return n
}

// files lists the paths in rev below dir.
func (r reviewer) files(rev, dir string) []string {
	r.t.Helper()
	out := r.git("ls-tree", "-r", "--name-only", rev, "--", dir)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

func (r reviewer) trailer(rev, key string) string {
	r.t.Helper()
	return r.git("log", "-1", "--format=%(trailers:key="+key+",valueonly)", rev)
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func prefixed(prefix string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = prefix + p
	}
	sort.Strings(out)
	return out
}

// readDir reads every file below dir with its permission bits.
func readDir(t testing.TB, dir string) (map[string][]byte, map[string]os.FileMode) {
	t.Helper()
	files := map[string][]byte{}
	modes := map[string]os.FileMode{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		modes[filepath.ToSlash(rel)] = info.Mode()
		return nil
	})
	require.NoError(t, err)
	return files, modes
}

func TestLocalWorkspaceCommitAndCheckout(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "workspace")
	s := openStore(t, gitstore.Options{Dir: dir})

	head, err := s.Head(ctx)
	require.NoError(t, err)
	assert.Empty(t, head, "a new workspace has no commits")

	files := rendering(1, allModules...)
	res, err := s.Commit(ctx, change("eu-1", "prod", 1, files, allModules...))
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{40}$`, res.SHA)
	assert.False(t, res.Empty)
	assert.False(t, res.Pushed, "local mode does not push")
	assert.Equal(t, 1, res.Attempts)
	head, err = s.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, res.SHA, head)

	// What a reviewer sees with the git CLI.
	r := reviewer{t, dir}
	r.fsck()
	assert.Equal(t, res.SHA, r.git("rev-parse", "main"))
	assert.Equal(t, "apply prod (cluster eu-1): vpc, eks, rds, karpenter", r.git("log", "-1", "--format=%s", "main"))
	assert.Equal(t, "Grape Agent <grape@localhost>|Grape Agent <grape@localhost>", r.git("log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"))
	assert.Equal(t, "1", r.trailer("main", "Grape-Deployment"))
	assert.Equal(t, "prod@v1", r.trailer("main", "Grape-Config"))
	assert.Equal(t, "eu-1", r.trailer("main", "Grape-Cluster"))
	assert.Equal(t, "apply", r.trailer("main", "Grape-Action"))
	assert.Equal(t, prefixed("clusters/eu-1/prod/", sortedKeys(files)), r.files("main", "clusters"))
	assert.Contains(t, r.git("show", "main:.gitignore"), "*.tfstate")

	// Checkout materialises exactly the committed files, byte for byte.
	run := filepath.Join(t.TempDir(), "run-1")
	require.NoError(t, s.Checkout(ctx, res.SHA, "eu-1", "prod", run))
	got, modes := readDir(t, run)
	assert.Equal(t, files, got)
	for p, m := range modes {
		assert.Equal(t, os.FileMode(0o644), m, p)
	}
	for p, content := range files {
		cli := r.git("show", res.SHA+":clusters/eu-1/prod/"+p)
		assert.Equal(t, strings.TrimSpace(string(content)), cli, "git show %s", p)
	}

	viaFiles, err := s.Files(ctx, res.SHA, "eu-1", "prod")
	require.NoError(t, err)
	assert.Equal(t, files, viaFiles)

	// A second config lands next to the first without touching it.
	res2, err := s.Commit(ctx, change("eu-1", "staging", 2, rendering(2, "vpc"), "vpc"))
	require.NoError(t, err)
	assert.Equal(t, 2, r.count("main"))
	assert.Equal(t, res.SHA, r.git("rev-parse", "main~1"))
	assert.Equal(t, r.git("rev-parse", res.SHA+":clusters/eu-1/prod"), r.git("rev-parse", res2.SHA+":clusters/eu-1/prod"),
		"the other config's tree is reused by hash")
	r.fsck()
}

func TestOpenReopensLocalWorkspace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "workspace")
	s := openStore(t, gitstore.Options{Dir: dir})
	res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s2 := openStore(t, gitstore.Options{Dir: dir})
	head, err := s2.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, res.SHA, head)
	res2, err := s2.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
	require.NoError(t, err)
	assert.Equal(t, res.SHA, reviewer{t, dir}.git("rev-parse", res2.SHA+"~1"))

	notRepo := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(notRepo, "x"), []byte("x"), 0o644))
	_, err = gitstore.Open(ctx, gitstore.Options{Dir: notRepo, Logger: quietLogger()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a git repository")
}

func TestRemoteWorkspaceTransports(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)
	sshSrv := srv.StartSSH(t)
	tests := []struct {
		name string
		url  func(repo string) string
		opts gitstore.Options
	}{
		{name: "git daemon", url: srv.GitURL},
		{name: "ssh key and known_hosts", url: sshSrv.URL,
			opts: gitstore.Options{Auth: gitstore.AuthOptions{SSHKeyFile: sshSrv.KeyFile, SSHKnownHostsFile: sshSrv.KnownHostsFile}}},
		{name: "http basic auth", url: srv.HTTPURL,
			opts: gitstore.Options{Auth: gitstore.AuthOptions{Username: srv.Username, Password: srv.Password}}},
		{name: "https token and private CA", url: srv.HTTPSURL,
			opts: gitstore.Options{CAFile: srv.CAFile, Auth: gitstore.AuthOptions{Username: srv.Username, Token: srv.Password}}},
		{name: "credentials in the URL", url: func(repo string) string {
			return strings.Replace(srv.HTTPURL(repo), "http://", "http://"+srv.Username+":"+srv.Password+"@", 1)
		}},
		{name: "file path", url: srv.RepoPath},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			repo := fmt.Sprintf("ws-%d.git", i)
			srv.CreateRepo(t, repo)
			opts := tt.opts
			opts.URL = tt.url(repo)
			opts.Dir = filepath.Join(t.TempDir(), "data", "workspace.git")
			s := openStore(t, opts)

			files := rendering(1, allModules...)
			res, err := s.Commit(ctx, change("eu-1", "prod", 7, files, allModules...))
			require.NoError(t, err)
			assert.True(t, res.Pushed)
			assert.False(t, res.Empty)

			r := reviewer{t, srv.RepoPath(repo)}
			r.fsck()
			assert.Equal(t, res.SHA, r.git("rev-parse", "main"), "the remote has the commit")
			assert.Equal(t, "apply prod (cluster eu-1): vpc, eks, rds, karpenter\n\nFirst deployment of this config.\n\n"+
				"Grape-Deployment: 7\nGrape-Config: prod@v7\nGrape-Cluster: eu-1\nGrape-Action: apply",
				r.git("log", "-1", "--format=%B", "main"))
			stat := r.git("show", "--stat=200", "--format=", "main")
			assert.Contains(t, stat, "clusters/eu-1/prod/modules/karpenter/main.tf")
			assert.Contains(t, stat, fmt.Sprintf("%d files changed", len(files)+1), ".gitignore plus the rendering")

			// A reviewer's clone holds the rendering byte for byte.
			clone := testsupport.NewColleague(t, srv.GitURL(repo))
			got, _ := readDir(t, filepath.Join(clone.Dir, "clusters", "eu-1", "prod"))
			assert.Equal(t, files, got)

			// The clone's config holds no credentials.
			cfg, err := os.ReadFile(filepath.Join(opts.Dir, "config"))
			require.NoError(t, err)
			assert.NotContains(t, string(cfg), srv.Password)

			res2, err := s.Commit(ctx, change("eu-1", "prod", 8, rendering(2, allModules...), allModules...))
			require.NoError(t, err)
			assert.Equal(t, 2, r.count("main"))
			assert.Equal(t, res.SHA, r.git("rev-parse", "main~1"))
			assert.Equal(t, "clusters/eu-1/prod/generated.auto.tfvars.json", r.git("diff", "--name-only", res.SHA, res2.SHA))
			r.fsck()
		})
	}
}

func TestRemoteMovedElsewhereIsRebased(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	// A colleague pushes to another path; the store has not seen it.
	colleague := srv.CloneAsColleague(t, "ws.git")
	theirs := colleague.CommitAndPush("docs: add runbook", map[string][]byte{"docs/runbook.md": []byte("# Runbook\n")})

	var previousSeen map[string][]byte
	c := change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc")
	c.Body = func(previous map[string][]byte) string { previousSeen = previous; return "changed node_count" }
	res, err := s.Commit(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Attempts, "the store saw the new tip before building")
	assert.Equal(t, rendering(1, "vpc"), previousSeen, "Body sees the files of the parent commit")

	r := reviewer{t, srv.RepoPath("ws.git")}
	r.fsck()
	assert.Equal(t, res.SHA, r.git("rev-parse", "main"))
	assert.Equal(t, theirs, r.git("rev-parse", "main~1"), "built on the colleague's commit")
	assert.Equal(t, first.SHA, r.git("rev-parse", "main~2"))
	assert.Equal(t, "# Runbook", r.git("show", "main:docs/runbook.md"), "the colleague's change survives")
	head, err := s.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, res.SHA, head)
}

func TestPushRaceIsRebasedAndRetried(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.HTTPURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone"),
		Auth: gitstore.AuthOptions{Username: srv.Username, Password: srv.Password}})
	first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc", "eks"), "vpc", "eks"))
	require.NoError(t, err)

	colleague := srv.CloneAsColleague(t, "ws.git")
	var theirs string
	gitstore.SetBeforePublish(s, func(attempt int) {
		if attempt == 1 {
			// Lands between the store's ref listing and its push.
			theirs = colleague.CommitAndPush("eu-2: hand-written notes", map[string][]byte{
				"clusters/eu-2/notes.md": []byte("notes\n"),
			})
		}
	})
	bodies := 0
	c := change("eu-1", "prod", 2, rendering(2, "vpc", "eks"), "vpc", "eks")
	c.Body = func(map[string][]byte) string { bodies++; return fmt.Sprintf("body #%d", bodies) }
	res, err := s.Commit(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts, "rejected once, rebuilt on the new tip")
	assert.Equal(t, 2, bodies, "Body is recomputed for the rebuilt commit")

	r := reviewer{t, srv.RepoPath("ws.git")}
	r.fsck()
	assert.Equal(t, res.SHA, r.git("rev-parse", "main"))
	assert.Equal(t, theirs, r.git("rev-parse", "main~1"))
	assert.Equal(t, first.SHA, r.git("rev-parse", "main~2"))
	assert.Equal(t, 3, r.count("main"), "both commits are there, nothing lost")
	assert.Contains(t, r.git("log", "-1", "--format=%b", "main"), "body #2")
	assert.Equal(t, "notes", r.git("show", "main:clusters/eu-2/notes.md"))
	assert.Equal(t, "clusters/eu-1/prod/generated.auto.tfvars.json", r.git("diff", "--name-only", "main~1", "main"))
}

func TestConflictOnSamePath(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)
	colleagueEdit := map[string][]byte{"clusters/eu-1/prod/main.tf": []byte("# hand edit\n")}

	t.Run("remote moved before the commit", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		srv.CreateRepo(t, "before.git")
		s := openStore(t, gitstore.Options{URL: srv.GitURL("before.git"), Dir: filepath.Join(t.TempDir(), "clone")})
		first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		require.NoError(t, err)
		theirs := srv.CloneAsColleague(t, "before.git").CommitAndPush("hand edit", colleagueEdit)

		_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
		var conflict *gitstore.ConflictError
		require.ErrorAs(t, err, &conflict)
		t.Logf("error: %v", err)
		assert.Equal(t, "clusters/eu-1/prod", conflict.Path)
		assert.Equal(t, first.SHA, conflict.Base)
		assert.Equal(t, theirs, conflict.Tip)
		assert.Contains(t, err.Error(), srv.GitURL("before.git"))

		r := reviewer{t, srv.RepoPath("before.git")}
		assert.Equal(t, theirs, r.git("rev-parse", "main"), "nothing was pushed over it")
		assert.Equal(t, "# hand edit", r.git("show", "main:clusters/eu-1/prod/main.tf"))

		// Other configs are not blocked by the conflict.
		_, err = s.Commit(ctx, change("eu-1", "staging", 3, rendering(3, "vpc"), "vpc"))
		require.NoError(t, err)

		// Re-running the deployment is a deliberate decision: it commits
		// over the hand edit, visibly.
		res, err := s.Commit(ctx, change("eu-1", "prod", 4, rendering(4, "vpc"), "vpc"))
		require.NoError(t, err)
		assert.Equal(t, strings.TrimSpace(string(rendering(4, "vpc")["main.tf"])), r.git("show", res.SHA+":clusters/eu-1/prod/main.tf"))
		r.fsck()
	})

	t.Run("remote moved during the push", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		srv.CreateRepo(t, "during.git")
		s := openStore(t, gitstore.Options{URL: srv.GitURL("during.git"), Dir: filepath.Join(t.TempDir(), "clone")})
		_, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		require.NoError(t, err)
		colleague := srv.CloneAsColleague(t, "during.git")
		var theirs string
		gitstore.SetBeforePublish(s, func(attempt int) {
			if attempt == 1 {
				theirs = colleague.CommitAndPush("hand edit", colleagueEdit)
			}
		})
		_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
		var conflict *gitstore.ConflictError
		require.ErrorAs(t, err, &conflict)
		r := reviewer{t, srv.RepoPath("during.git")}
		assert.Equal(t, theirs, r.git("rev-parse", "main"))
		assert.Equal(t, 2, r.count("main"))
		r.fsck()
	})

	t.Run("local workspace changed by hand", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		dir := filepath.Join(t.TempDir(), "workspace")
		s := openStore(t, gitstore.Options{Dir: dir})
		_, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		require.NoError(t, err)
		theirs := testsupport.NewColleague(t, dir).CommitAndPush("hand edit", colleagueEdit)

		_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
		var conflict *gitstore.ConflictError
		require.ErrorAs(t, err, &conflict)
		assert.Equal(t, theirs, reviewer{t, dir}.git("rev-parse", "main"))
	})
}

func TestDeletionsAreReal(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	_, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc", "eks", "rds"), "vpc", "eks", "rds"))
	require.NoError(t, err)
	_, err = s.Commit(ctx, change("eu-1", "dev", 2, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	// rds is dropped from the config.
	kept := rendering(1, "vpc", "eks")
	res, err := s.Commit(ctx, change("eu-1", "prod", 3, kept, "vpc", "eks"))
	require.NoError(t, err)
	r := reviewer{t, srv.RepoPath("ws.git")}
	status := r.git("diff", "--name-status", res.SHA+"~1", res.SHA)
	var want []string
	for _, f := range moduleFiles {
		want = append(want, "D\tclusters/eu-1/prod/modules/rds/"+f)
	}
	want = append(want, "M\tclusters/eu-1/prod/main.tf")
	sort.Strings(want)
	got := strings.Split(status, "\n")
	sort.Strings(got)
	assert.Equal(t, want, got)
	assert.Equal(t, prefixed("clusters/eu-1/prod/", sortedKeys(kept)), r.files(res.SHA, "clusters/eu-1/prod"))

	run := filepath.Join(t.TempDir(), "run")
	require.NoError(t, s.Checkout(ctx, res.SHA, "eu-1", "prod", run))
	_, err = os.Stat(filepath.Join(run, "modules", "rds"))
	require.ErrorIs(t, err, os.ErrNotExist, "a deleted module is gone from the run dir")

	// No files at all removes the config directory; the cluster directory
	// stays while another config lives in it, and goes with the last one.
	res, err = s.Commit(ctx, change("eu-1", "prod", 4, nil, "destroy"))
	require.NoError(t, err)
	assert.Empty(t, r.files(res.SHA, "clusters/eu-1/prod"))
	assert.NotEmpty(t, r.files(res.SHA, "clusters/eu-1/dev"))
	res, err = s.Commit(ctx, change("eu-1", "dev", 5, map[string][]byte{}, "destroy"))
	require.NoError(t, err)
	assert.Equal(t, ".gitignore", r.git("ls-tree", "--name-only", res.SHA))
	r.fsck()
	err = s.Checkout(ctx, res.SHA, "eu-1", "dev", filepath.Join(t.TempDir(), "gone"))
	assert.ErrorIs(t, err, gitstore.ErrNotInCommit)
}

func TestIdenticalRerenderIsAnEmptyCommit(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)
	for _, remote := range []bool{false, true} {
		t.Run(fmt.Sprintf("remote=%v", remote), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			opts := gitstore.Options{Dir: filepath.Join(t.TempDir(), "ws")}
			gitDir := opts.Dir
			if remote {
				srv.CreateRepo(t, "empty-commit.git")
				opts.URL = srv.GitURL("empty-commit.git")
				gitDir = srv.RepoPath("empty-commit.git")
			}
			s := openStore(t, opts)
			files := rendering(1, allModules...)
			first, err := s.Commit(ctx, change("eu-1", "prod", 1, files, allModules...))
			require.NoError(t, err)
			second, err := s.Commit(ctx, change("eu-1", "prod", 2, rendering(1, allModules...), allModules...))
			require.NoError(t, err)

			assert.True(t, second.Empty)
			assert.NotEqual(t, first.SHA, second.SHA, "the deployment gets its own commit")
			assert.Equal(t, remote, second.Pushed)
			r := reviewer{t, gitDir}
			assert.Equal(t, second.SHA, r.git("rev-parse", "main"))
			assert.Equal(t, first.SHA, r.git("rev-parse", "main~1"))
			assert.Equal(t, r.git("rev-parse", "main~1^{tree}"), r.git("rev-parse", "main^{tree}"))
			assert.Empty(t, r.git("show", "--stat", "--format=", "main"), "no file changes")
			assert.Equal(t, "2", r.trailer("main", "Grape-Deployment"))
			assert.Contains(t, r.git("log", "-1", "--format=%b", "main"), "Re-rendered over")
			r.fsck()
		})
	}
}

func TestConcurrentCommitsLoseNothing(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)
	for _, remote := range []bool{false, true} {
		t.Run(fmt.Sprintf("remote=%v", remote), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			opts := gitstore.Options{Dir: filepath.Join(t.TempDir(), "ws")}
			gitDir := opts.Dir
			if remote {
				srv.CreateRepo(t, "concurrent.git")
				opts.URL = srv.GitURL("concurrent.git")
				gitDir = srv.RepoPath("concurrent.git")
			}
			s := openStore(t, opts)
			const workers, perWorker = 6, 4
			var wg sync.WaitGroup
			shas := make(chan string, workers*perWorker)
			errs := make(chan error, workers*perWorker)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perWorker; i++ {
						config := fmt.Sprintf("cfg-%d", w)
						res, err := s.Commit(ctx, change("eu-1", config, w*100+i, rendering(w*100+i, "vpc", "eks"), "vpc", "eks"))
						if err != nil {
							errs <- err
							return
						}
						// Reads run alongside the writes.
						if _, err := s.Files(ctx, res.SHA, "eu-1", config); err != nil {
							errs <- err
							return
						}
						shas <- res.SHA
					}
				}()
			}
			wg.Wait()
			close(errs)
			close(shas)
			for err := range errs {
				t.Error(err)
			}
			seen := map[string]bool{}
			for sha := range shas {
				assert.False(t, seen[sha], "duplicate SHA %s", sha)
				seen[sha] = true
			}
			assert.Len(t, seen, workers*perWorker)

			r := reviewer{t, gitDir}
			r.fsck()
			assert.Equal(t, workers*perWorker, r.count("main"), "every commit is on the branch")
			for sha := range seen {
				r.git("merge-base", "--is-ancestor", sha, "main")
			}
			for w := 0; w < workers; w++ {
				want := rendering(w*100+perWorker-1, "vpc", "eks")
				got, err := s.Files(ctx, r.git("rev-parse", "main"), "eu-1", fmt.Sprintf("cfg-%d", w))
				require.NoError(t, err)
				assert.Equal(t, want, got, "cfg-%d holds its last rendering", w)
			}
		})
	}
}

func TestRefusesSecretsAndBadPaths(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "ws")
	s := openStore(t, gitstore.Options{Dir: dir})
	base, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	tests := []struct {
		name    string
		path    string
		content string
		want    error
	}{
		{"state file", "terraform.tfstate", "{}", gitstore.ErrForbiddenFile},
		{"state backup", "terraform.tfstate.backup", "{}", gitstore.ErrForbiddenFile},
		{"state in a module", "modules/vpc/old.tfstate", "{}", gitstore.ErrForbiddenFile},
		{"plan file", "prod.tfplan", "PK", gitstore.ErrForbiddenFile},
		{"plan named tfplan", "tfplan", "PK", gitstore.ErrForbiddenFile},
		{"provider cache", ".terraform/providers/x", "bin", gitstore.ErrForbiddenFile},
		{"nested provider cache", "modules/vpc/.terraform/modules.json", "{}", gitstore.ErrForbiddenFile},
		{"workspace state dir", "terraform.tfstate.d/prod/terraform.tfstate", "{}", gitstore.ErrForbiddenFile},
		{"cli config", ".terraformrc", "credentials {}", gitstore.ErrForbiddenFile},
		{"private key", "keys/deploy.pem", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n", gitstore.ErrForbiddenFile},
		{"aws key", "provider.tf", "access_key = \"AKIAZ7QF3XJ2LMNB4KPR\"", gitstore.ErrForbiddenFile},
		{"state under another name", "backup.json", `{"version": 4, "terraform_version": "1.11.4", "serial": 3, "lineage": "x"}`, gitstore.ErrForbiddenFile},
		{"parent escape", "../x.tf", "", gitstore.ErrInvalidPath},
		{"absolute", "/etc/x.tf", "", gitstore.ErrInvalidPath},
		{"dot git", "modules/.git/config", "", gitstore.ErrInvalidPath},
		{"empty segment", "modules//x.tf", "", gitstore.ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := rendering(2, "vpc")
			files[tt.path] = []byte(tt.content)
			_, err := s.Commit(ctx, change("eu-1", "prod", 2, files, "vpc"))
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.path, "the error names the file")
			assert.NotContains(t, err.Error(), "AKIAZ7QF3XJ2LMNB4KPR", "the error does not repeat the secret")
		})
	}
	allowed := rendering(2, "vpc")
	allowed["docs/example.tf"] = []byte(`access_key = "AKIAIOSFODNN7EXAMPLE" # the AWS documentation's example key`)
	allowed["modules/vpc/.terraform.lock.hcl"] = []byte("# lock file\n")
	_, err = s.Commit(ctx, change("eu-1", "prod", 3, allowed, "vpc"))
	require.NoError(t, err, "the lock file and documentation example keys are fine")

	for _, bad := range []struct{ cluster, config string }{{"../eu", "prod"}, {"eu-1", "a/b"}, {"", "prod"}, {"eu-1", ".."}, {"eu 1", "prod"}} {
		_, err := s.Commit(ctx, change(bad.cluster, bad.config, 9, rendering(1, "vpc"), "vpc"))
		require.ErrorIs(t, err, gitstore.ErrInvalidPath, "%q/%q", bad.cluster, bad.config)
	}
	for _, c := range []gitstore.Change{
		{ClusterID: "eu-1", ConfigName: "prod", Subject: ""},
		{ClusterID: "eu-1", ConfigName: "prod", Subject: "two\nlines"},
		{ClusterID: "eu-1", ConfigName: "prod", Subject: "ok", Trailers: []gitstore.Trailer{{Key: "Bad Key", Value: "v"}}},
		{ClusterID: "eu-1", ConfigName: "prod", Subject: "ok", Trailers: []gitstore.Trailer{{Key: "K", Value: "a\nb"}}},
	} {
		_, err := s.Commit(ctx, c)
		require.Error(t, err, "%+v", c)
	}
	r := reviewer{t, dir}
	assert.Equal(t, 2, r.count("main"), "no refused change made a commit")
	assert.Equal(t, base.SHA, r.git("rev-parse", "main~1"))
}

// forbiddenInTree is an independent statement of what a committed tree must
// never hold, checked against every commit with the git CLI.
var forbiddenInTree = []string{".tfstate", ".tfplan", "/.terraform/", "terraform.tfstate.d/", ".terraformrc"}

func TestCommittedTreesHoldNoSecrets(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	for i, cluster := range []string{"eu-1", "us-1", "ap-1"} {
		for j, config := range []string{"prod", "staging"} {
			_, err := s.Commit(ctx, change(cluster, config, i*10+j, rendering(i*10+j, allModules...), allModules...))
			require.NoError(t, err)
		}
	}
	r := reviewer{t, srv.RepoPath("ws.git")}
	commits := strings.Split(r.git("rev-list", "--all"), "\n")
	require.Len(t, commits, 6)
	for _, c := range commits {
		for _, p := range r.files(c, ".") {
			for _, bad := range forbiddenInTree {
				assert.NotContains(t, "/"+p, bad, "commit %s holds %s", c, p)
			}
		}
	}
	// git grep exits 1 when nothing matches.
	args := append([]string{"--git-dir=" + srv.RepoPath("ws.git"), "grep", "-I", "-l", "-E",
		"-e", "BEGIN [A-Z ]*PRIVATE KEY", "-e", "(AKIA|ASIA)[0-9A-Z]{16}", "-e", `"lineage"`,
		"-e", `(?i)aws_secret_access_key`, "-e", "sensitive_values"}, commits...)
	out, err := testsupport.GitOutput(ctx, "", args...)
	require.Error(t, err, "git grep found secrets: %s", out)
	assert.Empty(t, out)

	ignore := r.git("show", "main:.gitignore")
	for _, pattern := range []string{"*.tfstate", "*.tfstate.*", "*.tfplan", ".terraform/"} {
		assert.Contains(t, strings.Split(ignore, "\n"), pattern)
	}
}

func TestCheckoutKeepsModesAndRefusesLinks(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	// A person commits an executable and a symlink under other configs.
	colleague := srv.CloneAsColleague(t, "ws.git")
	tools := filepath.Join(colleague.Dir, "clusters", "eu-1", "tools")
	require.NoError(t, os.MkdirAll(tools, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tools, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tools, "README"), []byte("tools\n"), 0o644))
	links := filepath.Join(colleague.Dir, "clusters", "eu-1", "links")
	require.NoError(t, os.MkdirAll(links, 0o755))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(links, "passwd")))
	theirs := colleague.PushAll("tools and links")

	// Any commit the store has not seen yet is fetched by the next commit.
	_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
	require.NoError(t, err)

	run := filepath.Join(t.TempDir(), "tools")
	require.NoError(t, s.Checkout(ctx, theirs, "eu-1", "tools", run))
	_, modes := readDir(t, run)
	assert.Equal(t, map[string]os.FileMode{"run.sh": 0o755, "README": 0o644}, modes)

	err = s.Checkout(ctx, theirs, "eu-1", "links", filepath.Join(t.TempDir(), "links"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "symbolic link")

	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "stale.tf"), []byte("x"), 0o644))
	err = s.Checkout(ctx, res.SHA, "eu-1", "prod", full)
	require.Error(t, err, "a run dir must be fresh")
	assert.Contains(t, err.Error(), "not empty")

	err = s.Checkout(ctx, res.SHA, "eu-1", "nope", filepath.Join(t.TempDir(), "x"))
	require.ErrorIs(t, err, gitstore.ErrNotInCommit)
	err = s.Checkout(ctx, "HEAD", "eu-1", "prod", filepath.Join(t.TempDir(), "x"))
	require.ErrorContains(t, err, "40-hex")
	_, err = s.Files(ctx, strings.Repeat("ab", 20), "eu-1", "prod")
	assert.Error(t, err, "unknown commit")
}

func TestRemoteErrorsNameTheURLWithoutCredentials(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	sshSrv := srv.StartSSH(t)
	down := "git://" + testsupport.FreeLoopbackAddr(t) + "/ws.git"
	const secret = "wr0ng-s3cret-value"
	strangerKey, strangerKnownHosts := otherSSHIdentity(t, sshSrv.Addr)
	silent := "git://" + silentServer(t) + "/ws.git"

	tests := []struct {
		name     string
		opts     gitstore.Options
		wantIs   error
		wantText []string
	}{
		{
			name:     "wrong password",
			opts:     gitstore.Options{URL: srv.HTTPURL("ws.git"), Auth: gitstore.AuthOptions{Username: srv.Username, Password: secret}},
			wantIs:   transport.ErrAuthenticationRequired,
			wantText: []string{srv.HTTPURL("ws.git"), "authentication required"},
		},
		{
			name:     "wrong password in the URL",
			opts:     gitstore.Options{URL: strings.Replace(srv.HTTPURL("ws.git"), "http://", "http://"+srv.Username+":"+secret+"@", 1)},
			wantIs:   transport.ErrAuthenticationRequired,
			wantText: []string{srv.HTTPURL("ws.git")},
		},
		{
			name:     "wrong token in the URL",
			opts:     gitstore.Options{URL: strings.Replace(srv.HTTPSURL("ws.git"), "https://", "https://"+secret+"@", 1), CAFile: srv.CAFile},
			wantIs:   transport.ErrAuthenticationRequired,
			wantText: []string{srv.HTTPSURL("ws.git")},
		},
		{
			name:     "no credentials",
			opts:     gitstore.Options{URL: srv.HTTPURL("ws.git")},
			wantIs:   transport.ErrAuthenticationRequired,
			wantText: []string{srv.HTTPURL("ws.git")},
		},
		{
			name:     "repository missing over git",
			opts:     gitstore.Options{URL: srv.GitURL("missing.git")},
			wantIs:   transport.ErrRepositoryNotFound,
			wantText: []string{srv.GitURL("missing.git"), "repository not found"},
		},
		{
			name:     "repository missing over http",
			opts:     gitstore.Options{URL: srv.HTTPURL("missing.git"), Auth: gitstore.AuthOptions{Username: srv.Username, Password: srv.Password}},
			wantIs:   transport.ErrRepositoryNotFound,
			wantText: []string{srv.HTTPURL("missing.git")},
		},
		{
			name: "ssh key not authorized",
			opts: gitstore.Options{URL: sshSrv.URL("ws.git"),
				Auth: gitstore.AuthOptions{SSHKeyFile: strangerKey, SSHKnownHostsFile: sshSrv.KnownHostsFile}},
			wantText: []string{sshSrv.URL("ws.git"), "unable to authenticate"},
		},
		{
			name: "ssh host key mismatch",
			opts: gitstore.Options{URL: sshSrv.URL("ws.git"),
				Auth: gitstore.AuthOptions{SSHKeyFile: sshSrv.KeyFile, SSHKnownHostsFile: strangerKnownHosts}},
			wantText: []string{sshSrv.URL("ws.git"), "key mismatch"},
		},
		{
			name: "ssh repository missing",
			opts: gitstore.Options{URL: sshSrv.URL("missing.git"),
				Auth: gitstore.AuthOptions{SSHKeyFile: sshSrv.KeyFile, SSHKnownHostsFile: sshSrv.KnownHostsFile}},
			wantIs:   transport.ErrRepositoryNotFound,
			wantText: []string{sshSrv.URL("missing.git")},
		},
		{
			name:     "server never answers",
			opts:     gitstore.Options{URL: silent, Timeout: 300 * time.Millisecond, NetworkRetry: 500 * time.Millisecond},
			wantIs:   context.DeadlineExceeded,
			wantText: []string{silent, "deadline exceeded"},
		},
		{
			name:     "server down",
			opts:     gitstore.Options{URL: down, NetworkRetry: 700 * time.Millisecond},
			wantText: []string{down, "connection refused"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			opts := tt.opts
			opts.Dir = filepath.Join(t.TempDir(), "clone")
			opts.Logger = quietLogger()
			_, err := gitstore.Open(ctx, opts)
			require.Error(t, err)
			t.Logf("error: %v", err)
			var remoteErr *gitstore.RemoteError
			require.ErrorAs(t, err, &remoteErr)
			if tt.wantIs != nil {
				require.ErrorIs(t, err, tt.wantIs)
			}
			for _, want := range tt.wantText {
				assert.Contains(t, err.Error(), want)
			}
			assert.NotContains(t, err.Error(), secret)
			assert.NotContains(t, err.Error(), srv.Password)
		})
	}
}

func TestRemoteDownFailsFastAfterRetries(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	cloneDir := filepath.Join(t.TempDir(), "clone")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: cloneDir, NetworkRetry: 1500 * time.Millisecond})
	first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	srv.Stop()
	start := time.Now()
	_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
	took := time.Since(start)
	require.Error(t, err)
	t.Logf("error after %v: %v", took, err)
	assert.GreaterOrEqual(t, took, 600*time.Millisecond, "transient errors are retried with backoff")
	assert.Less(t, took, 15*time.Second, "within the retry budget")
	assert.Contains(t, err.Error(), srv.GitURL("ws.git"))
	var remoteErr *gitstore.RemoteError
	require.ErrorAs(t, err, &remoteErr)
	assert.True(t, isConnRefused(err), "connection refused is visible to errors.Is: %v", err)
	head, err := s.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, first.SHA, head, "no commit was recorded")

	// The existing clone opens without the network; a new one needs it.
	require.NoError(t, s.Close())
	s2 := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: cloneDir})
	head, err = s2.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, first.SHA, head)
	_, err = gitstore.Open(ctx, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "other"),
		NetworkRetry: -1, Logger: quietLogger()})
	assert.Error(t, err, "a new clone needs the remote")
}

func TestOpenRefusesACloneOfAnotherRemote(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "a.git")
	srv.CreateRepo(t, "b.git")
	dir := filepath.Join(t.TempDir(), "clone")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("a.git"), Dir: dir})
	_, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	_, err = gitstore.Open(ctx, gitstore.Options{URL: srv.GitURL("b.git"), Dir: dir, Logger: quietLogger()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), srv.GitURL("a.git"))
	assert.Contains(t, err.Error(), srv.GitURL("b.git"))

	// The clone of an existing remote picks up its history.
	s2 := openStore(t, gitstore.Options{URL: srv.GitURL("a.git"), Dir: filepath.Join(t.TempDir(), "second")})
	head, err := s2.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, reviewer{t, srv.RepoPath("a.git")}.git("rev-parse", "main"), head)
}

func TestCommitMessageGolden(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "ws")
	s := openStore(t, gitstore.Options{Dir: dir, Author: gitstore.Signature{Name: "Grape Agent (eu)", Email: "grape-eu@example.com"}})
	c := gitstore.Change{
		ClusterID:  "eu-1",
		ConfigName: "prod",
		Files:      rendering(1, "vpc", "eks", "rds"),
		Subject:    "apply prod (cluster eu-1): vpc, eks, rds",
		Body: func(map[string][]byte) string {
			return "Intent changes since the last commit of prod:\n  eks.node_count: 3 → 5\n  rds.instance_class: db.t3.medium → db.r6g.large\r\n\n"
		},
		Trailers: []gitstore.Trailer{
			{Key: gitstore.TrailerDeployment, Value: "8f14e45f-ceea-467f-a0e6-4d6c7c1e2f10"},
			{Key: gitstore.TrailerConfig, Value: "3c59dc04-8e5b-4a1c-9a36-7a5d5b7d2e11@v12"},
			{Key: gitstore.TrailerCluster, Value: "eu-1"},
			{Key: gitstore.TrailerAction, Value: "apply"},
		},
	}
	res, err := s.Commit(ctx, c)
	require.NoError(t, err)
	r := reviewer{t, dir}
	raw := r.git("cat-file", "commit", res.SHA)
	// Drop the tree and timestamps, which change per run.
	var kept []string
	for _, line := range strings.Split(raw, "\n") {
		switch {
		case strings.HasPrefix(line, "tree "):
			continue
		case strings.HasPrefix(line, "author "), strings.HasPrefix(line, "committer "):
			line = line[:strings.LastIndex(line, ">")+1]
		}
		kept = append(kept, line)
	}
	got := strings.Join(kept, "\n") + "\n"
	golden := filepath.Join("testdata", "commit-message.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run go test ./gitstore -run TestCommitMessageGolden -update to create it")
	assert.Equal(t, string(want), got)

	// git interpret-trailers reads exactly the four trailers.
	msg := r.git("log", "-1", "--format=%B", res.SHA)
	cmdOut, err := testsupport.GitOutput(ctx, "", "-c", "core.hooksPath=/dev/null", "interpret-trailers", "--parse", "--no-divider", writeTemp(t, msg))
	require.NoError(t, err)
	assert.Equal(t, "Grape-Deployment: 8f14e45f-ceea-467f-a0e6-4d6c7c1e2f10\nGrape-Config: 3c59dc04-8e5b-4a1c-9a36-7a5d5b7d2e11@v12\nGrape-Cluster: eu-1\nGrape-Action: apply", cmdOut)
}

func writeTemp(t testing.TB, content string) string {
	p := filepath.Join(t.TempDir(), "msg")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

func TestSignedCommitsVerifyWithGit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("gpg not found on PATH: git verify-commit needs it (Debian package gnupg)")
	}
	entity, err := openpgp.NewEntity("Grape Agent", "test", "grape@localhost", &packet.Config{RSABits: 2048})
	require.NoError(t, err)
	keyDir := t.TempDir()
	armored := func(kind string, write func(io.Writer) error) string {
		var buf bytes.Buffer
		w, err := armor.Encode(&buf, kind, nil)
		require.NoError(t, err)
		require.NoError(t, write(w))
		require.NoError(t, w.Close())
		return buf.String()
	}
	private := armored(openpgp.PrivateKeyType, func(w io.Writer) error { return entity.SerializePrivate(w, nil) })
	public := armored(openpgp.PublicKeyType, entity.Serialize)
	keyFile := filepath.Join(keyDir, "signing.asc")
	require.NoError(t, os.WriteFile(keyFile, []byte(private), 0o600))

	dir := filepath.Join(t.TempDir(), "ws")
	s := openStore(t, gitstore.Options{Dir: dir, SignKeyFile: keyFile})
	res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	// go-git's own verification.
	repo, err := git.PlainOpen(dir)
	require.NoError(t, err)
	c, err := repo.CommitObject(plumbing.NewHash(res.SHA))
	require.NoError(t, err)
	_, err = c.Verify(public)
	require.NoError(t, err)

	// And what a reviewer runs: git verify-commit with the agent's public key.
	gnupg := filepath.Join(t.TempDir(), "gnupg")
	require.NoError(t, os.Mkdir(gnupg, 0o700))
	env := append(os.Environ(), "GNUPGHOME="+gnupg, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "all")
		kill.Env = env
		_ = kill.Run()
	})
	imp := exec.CommandContext(ctx, "gpg", "--batch", "--import")
	imp.Env, imp.Stdin = env, strings.NewReader(public)
	out, err := imp.CombinedOutput()
	require.NoError(t, err, "gpg --import: %s", out)
	verify := exec.CommandContext(ctx, "git", "--git-dir="+dir, "verify-commit", "-v", res.SHA)
	verify.Env = env
	out, err = verify.CombinedOutput()
	require.NoError(t, err, "git verify-commit: %s", out)
	assert.Contains(t, string(out), `Good signature from "Grape Agent (test) <grape@localhost>"`)

	// A tampered key file fails at Open, not at the first deployment.
	require.NoError(t, os.WriteFile(keyFile, []byte(public), 0o600))
	_, err = gitstore.Open(ctx, gitstore.Options{Dir: dir, SignKeyFile: keyFile, Logger: quietLogger()})
	assert.ErrorContains(t, err, "no private key")
}

// otherSSHIdentity makes a client key the server does not authorize and a
// known_hosts file that expects another host key at addr.
func otherSSHIdentity(t testing.TB, addr string) (keyFile, knownHostsFile string) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "stranger")
	require.NoError(t, err)
	keyFile = filepath.Join(dir, "id_ed25519")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600))
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	knownHostsFile = filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, sshPub)
	require.NoError(t, os.WriteFile(knownHostsFile, []byte(line+"\n"), 0o644))
	return keyFile, knownHostsFile
}

// holdRefUpdates makes the server hang after it has committed a ref update
// and before it answers the client, like a server that dies or a network
// that drops the reply after the push landed. landed waits until a ref
// update has been committed; release lets the hung update finish and
// removes the hook (it also runs at the end of the test).
func holdRefUpdates(t testing.TB, repo string) (landed, release func()) {
	hook := filepath.Join(repo, "hooks", "reference-transaction")
	mark := filepath.Join(t.TempDir(), "committed")
	free := filepath.Join(t.TempDir(), "release")
	// Bounded, so a test that fails before release leaves no process behind
	// for long.
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = committed ]; then\n  touch %q\n  i=0\n  while [ ! -e %q ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\nfi\n", mark, free)
	require.NoError(t, os.WriteFile(hook, []byte(script), 0o755))
	var once sync.Once
	release = func() {
		once.Do(func() {
			require.NoError(t, os.Remove(hook))
			require.NoError(t, os.WriteFile(free, nil, 0o644))
		})
	}
	t.Cleanup(release)
	landed = func() {
		require.Eventually(t, func() bool { _, err := os.Stat(mark); return err == nil }, 30*time.Second, 10*time.Millisecond,
			"the server never committed the pushed ref")
	}
	return landed, release
}

func TestUnansweredPushThatLanded(t *testing.T) {
	t.Parallel()
	srv := testsupport.StartGitServer(t)

	// Timeout bounds each network operation: long enough for a loaded
	// machine to clone and push, short enough for the test to wait out.
	const timeout = 3 * time.Second

	t.Run("noticed by the retry", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		repo := srv.CreateRepo(t, "retry.git")
		logs := &syncBuffer{}
		s := openStore(t, gitstore.Options{URL: srv.GitURL("retry.git"), Dir: filepath.Join(t.TempDir(), "clone"),
			Timeout: timeout, NetworkRetry: 20 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		holdRefUpdates(t, repo)
		res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		require.NoError(t, err)
		assert.Contains(t, logs.String(), "push failed", "the first push really timed out")
		assert.Equal(t, 1, res.Attempts, "one commit was built and it landed")
		r := reviewer{t, repo}
		assert.Equal(t, res.SHA, r.git("rev-parse", "main"))
		assert.Equal(t, 1, r.count("main"), "not pushed twice")
	})

	t.Run("noticed by the next commit", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		repo := srv.CreateRepo(t, "next.git")
		s := openStore(t, gitstore.Options{URL: srv.GitURL("next.git"), Dir: filepath.Join(t.TempDir(), "clone"),
			Timeout: timeout, NetworkRetry: -1})
		_, err := s.Commit(ctx, change("eu-1", "prod", 0, rendering(0, "vpc"), "vpc"))
		require.NoError(t, err)
		landed, release := holdRefUpdates(t, repo)
		_, err = s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
		require.Error(t, err, "the push timed out")
		landed()
		r := reviewer{t, repo}
		tip := r.git("rev-parse", "main")
		release()

		// The landed commit changed eu-1/prod, but it is the store's own.
		res, err := s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
		require.NoError(t, err, "not a conflict")
		assert.Equal(t, tip, r.git("rev-parse", res.SHA+"~1"))
		assert.Equal(t, "1", r.trailer(tip, "Grape-Deployment"))
		r.fsck()
	})
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestOwnBranchOnAnExistingRemote(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	theirs := srv.CloneAsColleague(t, "ws.git").CommitAndPush("readme", map[string][]byte{"README.md": []byte("team repo\n")})

	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone"), Branch: "grape"})
	head, err := s.Head(ctx)
	require.NoError(t, err)
	assert.Empty(t, head, "the branch does not exist yet")
	res, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	r := reviewer{t, srv.RepoPath("ws.git")}
	assert.Equal(t, res.SHA, r.git("rev-parse", "grape"))
	assert.Equal(t, theirs, r.git("rev-parse", "main"), "other branches are left alone")
	assert.Equal(t, 1, r.count("grape"))
	r.fsck()

	_, err = gitstore.Open(ctx, gitstore.Options{Dir: t.TempDir(), Branch: "a/b", Logger: quietLogger()})
	assert.ErrorContains(t, err, "invalid branch")
}

// silentServer accepts connections and never says a word, like a git host
// behind a broken proxy.
func silentServer(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestPushRejectedByAHook(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	repo := srv.CreateRepo(t, "ws.git")
	s := openStore(t, gitstore.Options{URL: srv.GitURL("ws.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)

	hook := "#!/bin/sh\necho 'main is protected: open a merge request' >&2\nexit 1\n"
	require.NoError(t, os.WriteFile(filepath.Join(repo, "hooks", "pre-receive"), []byte(hook), 0o755))
	_, err = s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
	require.ErrorIs(t, err, gitstore.ErrPushRejected)
	t.Logf("error: %v", err)
	assert.Contains(t, err.Error(), srv.GitURL("ws.git"))
	assert.Contains(t, err.Error(), "main is protected", "the remote's explanation reaches the deployment log")
	assert.Equal(t, first.SHA, reviewer{t, repo}.git("rev-parse", "main"))
	head, err := s.Head(ctx)
	require.NoError(t, err)
	assert.Equal(t, first.SHA, head)
}

func TestLocalWorkspaceSurvivesGitGC(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "ws")
	s := openStore(t, gitstore.Options{Dir: dir})
	first, err := s.Commit(ctx, change("eu-1", "prod", 1, rendering(1, "vpc"), "vpc"))
	require.NoError(t, err)
	_, err = s.Files(ctx, first.SHA, "eu-1", "prod") // loads the pack index
	require.NoError(t, err)

	// An operator packs the workspace while the agent runs: loose objects
	// move into a pack the store has not indexed.
	r := reviewer{t, dir}
	r.git("gc", "--quiet", "--prune=now")

	res, err := s.Commit(ctx, change("eu-1", "prod", 2, rendering(2, "vpc"), "vpc"))
	require.NoError(t, err)
	assert.Equal(t, first.SHA, r.git("rev-parse", res.SHA+"~1"))
	got, err := s.Files(ctx, first.SHA, "eu-1", "prod")
	require.NoError(t, err)
	assert.Equal(t, rendering(1, "vpc"), got)
	r.fsck()
}

// TestFleetOfAgentsSharesTheWorkspace: several agents of one cluster commit
// to the same config's path in turn (each from its own clone). Their commits
// carry the cluster's trailer, so none is a conflict for the others; a
// person's edit of that path still is.
func TestFleetOfAgentsSharesTheWorkspace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "fleet.git")
	open := func() *gitstore.Store {
		return openStore(t, gitstore.Options{URL: srv.GitURL("fleet.git"), Dir: filepath.Join(t.TempDir(), "clone")})
	}
	a, b := open(), open()
	for i, s := range []*gitstore.Store{a, b, a, a, b} {
		_, err := s.Commit(ctx, change("eu-1", "prod", i+1, rendering(i+1, "vpc"), "vpc"))
		require.NoError(t, err, "commit %d", i+1)
	}
	r := reviewer{t, srv.RepoPath("fleet.git")}
	assert.Equal(t, 5, r.count("main"), "every agent's commit is kept")
	r.fsck()

	// Another cluster's trailer does not make a commit ours.
	srv.CloneAsColleague(t, "fleet.git").CommitAndPush("edit\n\nGrape-Cluster: eu-2", map[string][]byte{"clusters/eu-1/prod/main.tf": []byte("# hand edit\n")})
	_, err := a.Commit(ctx, change("eu-1", "prod", 6, rendering(6, "vpc"), "vpc"))
	var conflict *gitstore.ConflictError
	require.ErrorAs(t, err, &conflict, "a change by anyone but the cluster's agents is a conflict")
}
