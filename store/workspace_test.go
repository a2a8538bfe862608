package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// committed queues a deployment of action and marks it started at `at` with
// commit sha, as an agent's commit phase leaves it.
func (b bundle) committed(t *testing.T, c store.Config, action store.Action, source *string, sha string, at time.Time) {
	t.Helper()
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: action, SourceCommit: source})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET status = 'succeeded', started_at = $2, finished_at = $2, commit_sha = $3 WHERE id = $1`, d.ID, at, sha)
	require.NoError(t, err)
}

func TestHistoryAnchorFollowsCommitsAndAcceptedRewrites(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	other := b.config(t, "us-1", "prod")
	sha := func(ch string) string { return strings.Repeat(ch, 40) }

	anchor, err := b.st.HistoryAnchor(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Empty(t, anchor, "a cluster that never committed requires nothing")

	t0 := time.Now().Add(-time.Hour)
	b.committed(t, c, store.ActionApply, nil, sha("a"), t0)
	b.committed(t, c, store.ActionPlan, nil, sha("b"), t0.Add(time.Minute))
	// Neither a drift check nor a re-apply of an old commit pushes anything.
	b.committed(t, c, store.ActionDrift, ptr(sha("a")), sha("a"), t0.Add(2*time.Minute))
	b.committed(t, c, store.ActionApply, ptr(sha("a")), sha("a"), t0.Add(3*time.Minute))
	b.committed(t, other, store.ActionApply, nil, sha("f"), t0.Add(4*time.Minute))

	anchor, err = b.st.HistoryAnchor(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Equal(t, sha("b"), anchor)

	_, err = b.st.AcceptRewrite(b.ctx, store.AcceptRewriteParams{ClusterID: "eu-1", By: "alice"})
	require.ErrorIs(t, err, store.ErrInvalid)
	require.ErrorContains(t, err, "--reason")
	_, err = b.st.AcceptRewrite(b.ctx, store.AcceptRewriteParams{ClusterID: "eu-1", By: "alice", Reason: "x", Tip: "abc"})
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = b.st.AcceptRewrite(b.ctx, store.AcceptRewriteParams{ClusterID: "nope", By: "alice", Reason: "x"})
	require.ErrorIs(t, err, store.ErrNotFound)

	w, err := b.st.AcceptRewrite(b.ctx, store.AcceptRewriteParams{ClusterID: "eu-1", By: "alice", Reason: "  history squashed by the git admin  "})
	require.NoError(t, err)
	require.Equal(t, sha("b"), *w.MissingCommit, "the acceptance names the commit given up")
	require.Nil(t, w.AcceptedTip)
	require.Equal(t, "history squashed by the git admin", w.Reason)
	anchor, err = b.st.HistoryAnchor(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Empty(t, anchor, "after an acceptance without a tip the next commit may build on anything")

	w2, err := b.st.AcceptRewrite(b.ctx, store.AcceptRewriteParams{ClusterID: "eu-1", By: "bob", Reason: "again", Tip: strings.ToUpper(sha("c"))})
	require.NoError(t, err)
	require.Nil(t, w2.MissingCommit)
	anchor, err = b.st.HistoryAnchor(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Equal(t, sha("c"), anchor, "the vouched-for tip is required")

	b.committed(t, c, store.ActionApply, nil, sha("d"), time.Now().Add(time.Second))
	anchor, err = b.st.HistoryAnchor(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Equal(t, sha("d"), anchor, "a commit after the acceptance is required again")

	list, err := b.st.ListRewrites(b.ctx, "eu-1")
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "bob", list[0].AcceptedBy)
	require.Equal(t, "alice", list[1].AcceptedBy)
	other2, err := b.st.ListRewrites(b.ctx, "us-1")
	require.NoError(t, err)
	require.Empty(t, other2)
}

func ptr[T any](v T) *T { return &v }

func TestRecentEndsListsWhatNotesRecord(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	b.config(t, "us-1", "prod")
	sha := strings.Repeat("a", 40)
	old := time.Now().Add(-48 * time.Hour)
	b.committed(t, c, store.ActionApply, nil, sha, old) // finished long ago
	b.committed(t, c, store.ActionApply, nil, sha, time.Now())
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: c.ID, Action: store.ActionDrift, SourceCommit: &sha})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET status = 'succeeded', started_at = now(), finished_at = now(), commit_sha = $2 WHERE id = $1`, d.ID, sha)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `INSERT INTO drift_reports (config_id, cluster_id, deployment_id, status, commit_sha, details)
VALUES ($1, 'eu-1', $2, 'drifted', $3, '{"resources":[{"address":"aws_vpc.this","action":"update","attributes":["tags"]}]}')`, c.ID, d.ID, sha)
	require.NoError(t, err)
	// Queued and running deployments are not ends.
	_, err = b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: c.ID})
	require.NoError(t, err)

	ends, err := b.st.RecentEnds(b.ctx, "eu-1", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, ends, 2)
	require.Equal(t, "prod", ends[0].ConfigName)
	require.Nil(t, ends[0].DriftStatus)
	require.Equal(t, d.ID, ends[1].ID)
	require.Equal(t, store.DriftDrifted, *ends[1].DriftStatus)
	require.Contains(t, string(ends[1].DriftDetails), "aws_vpc.this")
}

// TestAgentRoleReadsOnlyItsRewritesAndCannotWriteThem: an agent learns its
// own cluster's anchor and ends through row-level security, sees nothing of
// another cluster's, and cannot excuse a rewrite itself.
func TestAgentRoleReadsOnlyItsRewritesAndCannotWriteThem(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	for _, s := range []seeded{a, b} {
		_, err := tn.pool.Exec(tn.ctx, `UPDATE deployments SET commit_sha = $2 WHERE id = $1`, s.running.ID, strings.Repeat("c", 40))
		require.NoError(t, err)
		_, err = tn.admin.AcceptRewrite(tn.ctx, store.AcceptRewriteParams{ClusterID: s.cluster, Tip: strings.Repeat("d", 40), Reason: "seed", By: "admin"})
		require.NoError(t, err)
	}
	asA, poolA, _ := tn.agent(t, a.cluster)
	anchor, err := asA.HistoryAnchor(tn.ctx, a.cluster)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("d", 40), anchor)
	anchor, err = asA.HistoryAnchor(tn.ctx, b.cluster)
	require.NoError(t, err)
	require.Empty(t, anchor, "another cluster's anchor is invisible")
	list, err := asA.ListRewrites(tn.ctx, b.cluster)
	require.NoError(t, err)
	require.Empty(t, list)
	list, err = asA.ListRewrites(tn.ctx, a.cluster)
	require.NoError(t, err)
	require.Len(t, list, 1)

	_, err = asA.AcceptRewrite(tn.ctx, store.AcceptRewriteParams{ClusterID: a.cluster, Reason: "cover my tracks", By: "agent"})
	requireRefused(t, err, "an agent cannot accept a rewrite")
	_, err = poolA.Exec(tn.ctx, `DELETE FROM workspace_rewrites`)
	requireRefused(t, err, "an agent cannot delete acceptances")
}
