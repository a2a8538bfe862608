package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// remoteNotes is `git log --notes=grape` of a fresh clone of the audit
// repository, as a reviewer would run it.
func (e *env) remoteNotes() string {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), "review")
	testsupport.RunGit(e.t, "", "clone", "--quiet", "--bare", e.gitSrv.GitURL("audit.git"), dir)
	if testsupport.RunGit(e.t, dir, "ls-remote", "origin", "refs/notes/grape") == "" {
		return ""
	}
	testsupport.RunGit(e.t, dir, "fetch", "--quiet", "origin", "refs/notes/grape:refs/notes/grape")
	return testsupport.RunGit(e.t, dir, "log", "--notes=grape")
}

// waitNote waits until the remote's notes hold every substring. The agent
// pushes a note right after the run's outcome is recorded; a minute covers a
// loaded machine.
func (e *env) waitNote(substrs ...string) string {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute * slack)
	for {
		log := e.remoteNotes()
		missing := ""
		for _, s := range substrs {
			if !strings.Contains(log, s) {
				missing = s
				break
			}
		}
		if missing == "" {
			return log
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the remote's git notes never held %q:\n%s", missing, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestGitNotesAndRewrittenHistory: the outcome of a deployment reaches the
// customer's git as a note on its commit; a force-push of the audit branch
// between two deployments makes the second fail naming the missing commit,
// with nothing applied, until an operator accepts the rewrite.
func TestGitNotesAndRewrittenHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	cfg := e.config("notes", fmt.Sprintf(vpcOnly, "one"))
	e.startAgent("agent-1")

	d1 := e.deploy(cfg, store.ActionApply)
	done := e.wait(d1.ID, 4*time.Minute, store.StatusSucceeded)
	sha1 := deref(done.CommitSHA)
	log := e.waitNote("Deployment: "+d1.ID.String(), "Status: succeeded")
	for _, want := range []string{"Notes (grape):", "Grape apply succeeded", "Config: notes@v1 (cluster e2e)",
		"Plan: ", "Changed: + module.vpc", "Requested-By: ", "Engine: terraform 1.11.4", "Finished: "} {
		require.Contains(t, log, want)
	}
	require.Contains(t, testsupport.RunGit(t, e.repoDir, "log", "-1", "--notes=grape", "--format=%N", sha1), d1.ID.String(),
		"the note is on the deployment's commit")

	// Someone replaces the audit branch with an unrelated history.
	attacker := filepath.Join(t.TempDir(), "attacker")
	testsupport.RunGit(t, "", "init", "--quiet", "-b", "main", attacker)
	require.NoError(t, os.WriteFile(filepath.Join(attacker, "README"), []byte("clean slate\n"), 0o644))
	testsupport.RunGit(t, attacker, "add", ".")
	testsupport.RunGit(t, attacker, "commit", "--quiet", "-m", "clean slate")
	testsupport.RunGit(t, attacker, "push", "--quiet", "--force", e.repoDir, "main")
	forced := e.git("rev-parse", "main")

	cfg = e.config("notes", fmt.Sprintf(vpcOnly, "two"))
	d2 := e.deploy(cfg, store.ActionApply)
	failed := e.wait(d2.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindGit, deref(failed.ErrorKind))
	msg := deref(failed.Error)
	require.Contains(t, msg, "no longer contains commit "+sha1)
	require.Contains(t, msg, "its tip is now "+forced)
	require.Contains(t, msg, "grape workspace accept-rewrite --cluster e2e")
	require.Contains(t, e.logText(d2.ID), "no longer contains commit "+sha1)
	require.Nil(t, failed.CommitSHA, "nothing was committed")
	require.Equal(t, forced, e.git("rev-parse", "main"), "nothing was pushed")
	require.NotContains(t, e.aws("ec2", "describe-vpcs"), `"Value": "two"`, "nothing was applied")

	// The operator accepts the rewrite on the record; the next run builds on it.
	require.Contains(t, e.grape("workspace", "accept-rewrite", "--cluster", "e2e", "--tip", forced, "--reason", "repository migrated"),
		"commit "+sha1+" is no longer required")
	require.Contains(t, e.grape("workspace", "rewrites", "--cluster", "e2e"), "repository migrated")
	d3 := e.deploy(cfg, store.ActionApply)
	e.wait(d3.ID, 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, forced, e.git("rev-parse", "main^"))
	e.waitNote("Deployment: " + d3.ID.String())
}
