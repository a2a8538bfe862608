package store_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// run queues, claims and (unless status is in_progress) finishes one
// deployment of the config, with lines log lines, and backdates its finish.
func (b bundle) run(t *testing.T, c store.Config, action store.Action, status store.Status, lines int, finishedAgo time.Duration) store.Deployment {
	t.Helper()
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: action})
	require.NoError(t, err)
	got, err := b.st.ClaimByID(b.ctx, d.ID, "agent-1", time.Minute)
	require.NoError(t, err)
	require.NoError(t, b.st.SetCommit(b.ctx, d.ID, "agent-1", strings.Repeat("a", 40)))
	b.appendLines(t, got.ID, 1, lines)
	if status != store.StatusInProgress {
		require.NoError(t, b.st.Finish(b.ctx, d.ID, "agent-1", store.Outcome{Status: status}))
		_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET finished_at = now() - make_interval(secs => $2),
    created_at = now() - make_interval(secs => $2 + 60) WHERE id = $1`, d.ID, finishedAgo.Seconds())
		require.NoError(t, err)
	}
	d, err = b.st.GetDeployment(b.ctx, d.ID)
	require.NoError(t, err)
	return d
}

func (b bundle) appendLines(t *testing.T, id uuid.UUID, from, n int) {
	t.Helper()
	var seqs []int64
	var streams []store.Stream
	var lines []string
	var at []time.Time
	for i := from; i < from+n; i++ {
		seqs = append(seqs, int64(i))
		streams = append(streams, store.StreamStdout)
		lines = append(lines, fmt.Sprintf("line %d", i))
		at = append(at, time.Now())
	}
	_, err := b.st.AppendLogs(b.ctx, id, seqs, streams, lines, at)
	require.NoError(t, err)
}

func (b bundle) lineCount(t *testing.T, id uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM deployment_logs WHERE deployment_id = $1`, id).Scan(&n))
	return n
}

func TestPruneLogs(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	const day = 24 * time.Hour
	old := b.run(t, c, store.ActionApply, store.StatusSucceeded, 23, 40*day)
	oldFailed := b.run(t, c, store.ActionPlan, store.StatusFailed, 5, 35*day)
	recent := b.run(t, c, store.ActionApply, store.StatusSucceeded, 4, day)
	running := b.run(t, c, store.ActionApply, store.StatusInProgress, 9, 0)
	// A running deployment's lines are old too: age never matters while it runs.
	_, err := b.pool.Exec(b.ctx, `UPDATE deployment_logs SET created_at = now() - interval '90 days' WHERE deployment_id = $1`, running.ID)
	require.NoError(t, err)

	cutoff := time.Now().Add(-30 * day)
	dry, err := b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: cutoff, DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, store.PruneResult{LogDeployments: 2, LogLines: 28}, dry)
	assert.Equal(t, 23, b.lineCount(t, old.ID), "a dry run deletes nothing")

	res, err := b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: cutoff, BatchLines: 7})
	require.NoError(t, err)
	assert.Equal(t, store.PruneResult{LogDeployments: 2, LogLines: 28}, res)
	for _, d := range []store.Deployment{old, oldFailed} {
		assert.Zero(t, b.lineCount(t, d.ID))
		got, err := b.st.GetDeployment(b.ctx, d.ID)
		require.NoError(t, err)
		require.NotNil(t, got.LogsPrunedAt)
		assert.Equal(t, d.Status, got.Status, "the row keeps its status")
		assert.Equal(t, d.CommitSHA, got.CommitSHA)
	}
	assert.Equal(t, 4, b.lineCount(t, recent.ID))
	assert.Equal(t, 9, b.lineCount(t, running.ID))
	b.appendLines(t, running.ID, 10, 3) // appends go on
	assert.Equal(t, 12, b.lineCount(t, running.ID))

	again, err := b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: cutoff})
	require.NoError(t, err)
	assert.Equal(t, store.PruneResult{}, again, "a second run finds nothing")

	_, err = b.st.Prune(b.ctx, store.PruneOptions{})
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: cutoff, HistoryBefore: time.Now()})
	require.ErrorContains(t, err, "history cutoff must be older")
}

// TestPruneHistory: past the history cutoff deployments and drift reports
// go, except the latest succeeded apply (drift checks and approvals run its
// commit), the latest deployment and the latest drift report of a config.
func TestPruneHistory(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	const day = 24 * time.Hour
	lastApply := b.run(t, c, store.ActionApply, store.StatusSucceeded, 3, 400*day)
	olderApply := b.run(t, c, store.ActionApply, store.StatusSucceeded, 3, 500*day)
	failedLater := b.run(t, c, store.ActionApply, store.StatusFailed, 3, 300*day)
	drift1 := b.run(t, c, store.ActionDrift, store.StatusSucceeded, 2, 450*day)
	drift2 := b.run(t, c, store.ActionDrift, store.StatusSucceeded, 2, 350*day)
	recent := b.run(t, c, store.ActionPlan, store.StatusSucceeded, 1, day)
	var reports []uuid.UUID
	for i, ago := range []time.Duration{450 * day, 350 * day} {
		r, err := b.st.InsertDriftReport(b.ctx, store.DriftReport{ConfigID: c.ID, ClusterID: c.ClusterID, DeploymentID: &[]uuid.UUID{drift1.ID, drift2.ID}[i], Status: store.DriftInSync})
		require.NoError(t, err)
		_, err = b.pool.Exec(b.ctx, `UPDATE drift_reports SET checked_at = now() - make_interval(secs => $2) WHERE id = $1`, r.ID, ago.Seconds())
		require.NoError(t, err)
		reports = append(reports, r.ID)
	}
	// Another config whose only deployment is old: it is its latest, so it stays.
	other := b.config(t, "eu-2", "lonely")
	lonely := b.run(t, other, store.ActionApply, store.StatusFailed, 1, 600*day)

	opts := store.PruneOptions{LogsBefore: time.Now().Add(-30 * day), HistoryBefore: time.Now().Add(-200 * day)}
	opts.DryRun = true
	dry, err := b.st.Prune(b.ctx, opts)
	require.NoError(t, err)
	opts.DryRun = false
	res, err := b.st.Prune(b.ctx, opts)
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.DriftReports)
	assert.Equal(t, int64(4), res.DeletedDeployments, "older apply, failed apply and both drift runs")
	assert.Equal(t, dry.DriftReports, res.DriftReports)
	assert.Equal(t, dry.DeletedDeployments, res.DeletedDeployments)

	for _, d := range []store.Deployment{lastApply, recent, lonely} {
		_, err := b.st.GetDeployment(b.ctx, d.ID)
		require.NoError(t, err, "deployment %s (%s) must stay", d.ID, d.Action)
	}
	for _, d := range []store.Deployment{olderApply, failedLater, drift1, drift2} {
		_, err := b.st.GetDeployment(b.ctx, d.ID)
		require.ErrorIs(t, err, store.ErrNotFound, "deployment %s should be gone", d.ID)
	}
	_, err = b.st.GetDriftReport(b.ctx, reports[0])
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = b.st.GetDriftReport(b.ctx, reports[1])
	assert.NoError(t, err, "the config's latest drift report stays")
}

func TestApprovalExpiry(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	timeout := 10 * time.Minute
	c, err := b.st.UpsertConfig(b.ctx, "eu-1", "prod", c.Spec, store.ConfigSettings{ApprovalTimeout: &timeout})
	require.NoError(t, err)
	assert.Equal(t, timeout, c.ApprovalTimeout())
	short := 30 * time.Second
	_, err = b.st.UpsertConfig(b.ctx, "eu-1", "prod", c.Spec, store.ConfigSettings{ApprovalTimeout: &short})
	require.ErrorIs(t, err, store.ErrInvalid)
	fresh := b.config(t, "eu-2", "prod")
	assert.Equal(t, 24*time.Hour, fresh.ApprovalTimeout(), "the default")

	d := b.run(t, c, store.ActionApply, store.StatusInProgress, 2, 0)
	require.NoError(t, b.st.AwaitApproval(b.ctx, d.ID, "agent-1"))
	blk, err := b.st.ConfigBlocker(b.ctx, c.ID)
	require.NoError(t, err)
	assert.Equal(t, d.ID, blk.Deployment.ID)
	require.NotNil(t, blk.ExpiresAt)
	assert.WithinDuration(t, time.Now().Add(timeout), *blk.ExpiresAt, time.Minute)
	assert.Contains(t, blk.Describe(time.Now()), "has awaited approval for")

	long, err := b.st.NoteLongWaits(b.ctx, "eu-1", 0)
	require.NoError(t, err)
	assert.Empty(t, long, "not waited half its timeout yet")
	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET awaiting_approval_at = now() - interval '6 minutes' WHERE id = $1`, d.ID)
	require.NoError(t, err)
	long, err = b.st.NoteLongWaits(b.ctx, "eu-1", 0)
	require.NoError(t, err)
	require.Len(t, long, 1)
	assert.Equal(t, d.ID, long[0].DeploymentID)
	assert.Equal(t, store.WaitAwaitingApproval, long[0].Reason)
	assert.WithinDuration(t, time.Now().Add(4*time.Minute), *long[0].ExpiresAt, time.Minute)
	long, err = b.st.NoteLongWaits(b.ctx, "eu-1", 0)
	require.NoError(t, err)
	assert.Empty(t, long, "announced once")

	expired, err := b.st.ExpireApprovals(b.ctx, "eu-1")
	require.NoError(t, err)
	assert.Empty(t, expired, "not yet due")
	rescued, err := b.st.RescueExpired(b.ctx, "eu-1", time.Hour)
	require.NoError(t, err)
	assert.Empty(t, rescued, "not yet due")

	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET awaiting_approval_at = now() - interval '11 minutes' WHERE id = $1`, d.ID)
	require.NoError(t, err)
	// The agents' rescue loop runs the sweep.
	expired, err = b.st.RescueExpired(b.ctx, "eu-1", time.Hour)
	require.NoError(t, err)
	require.Len(t, expired, 1)
	got := expired[0].Deployment
	assert.Equal(t, got.Error, &expired[0].Decision.Note)
	assert.Equal(t, store.StatusCancelled, got.Status)
	require.NotNil(t, got.Error)
	assert.True(t, strings.HasPrefix(*got.Error, "approval expired: nobody approved or rejected the plan within 10m0s"), *got.Error)
	lines, err := b.st.ReadLogs(b.ctx, d.ID, 0, 100)
	require.NoError(t, err)
	assert.Equal(t, *got.Error, lines[len(lines)-1].Line)
	_, err = b.st.ConfigBlocker(b.ctx, c.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "the config is free again")
	_, err = b.st.Approve(b.ctx, d.ID, "alice", "")
	assert.Error(t, err, "an expired plan cannot be approved")
}

func TestSetEngine(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	d := b.run(t, c, store.ActionApply, store.StatusInProgress, 0, 0)
	require.NoError(t, b.st.SetEngine(b.ctx, d.ID, "agent-1", "opentofu", "1.10.10"))
	got, err := b.st.GetDeployment(b.ctx, d.ID)
	require.NoError(t, err)
	assert.Equal(t, "opentofu", *got.Engine)
	assert.Equal(t, "1.10.10", *got.EngineVersion)
	require.ErrorIs(t, b.st.SetEngine(b.ctx, d.ID, "agent-2", "terraform", "1.11.4"), store.ErrLeaseLost)
	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET engine = 'pulumi' WHERE id = $1`, d.ID)
	assert.ErrorContains(t, err, "deployments_engine")
}

// TestPruneWebhookOutbox: delivered events go with the logs' cutoff, given
// up and never delivered ones only past the history cutoff, in batches; a
// dry run counts the same and deletes nothing.
func TestPruneWebhookOutbox(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	_, _, err := b.st.AddNotifyTarget(b.ctx, store.NotifyTarget{ClusterID: "eu-1", URL: "http://127.0.0.1:1/hook", Format: "json"})
	require.NoError(t, err)
	const day = 24 * time.Hour
	// Each finished deployment enqueues one event; its row is then aged.
	event := func(ago time.Duration, state string) int64 {
		d := b.run(t, c, store.ActionApply, store.StatusSucceeded, 0, ago)
		var id int64
		require.NoError(t, b.pool.QueryRow(b.ctx, `UPDATE notify_outbox SET created_at = now() - make_interval(secs => $2),
    delivered_at = CASE WHEN $3 = 'delivered' THEN now() - make_interval(secs => $2) END,
    gave_up_at = CASE WHEN $3 = 'dead' THEN now() - make_interval(secs => $2) END
WHERE deployment_id = $1 RETURNING id`, d.ID, ago.Seconds(), state).Scan(&id))
		return id
	}
	for range 5 {
		event(40*day, "delivered")
	}
	recentDelivered := event(day, "delivered")
	deadMiddle := event(100*day, "dead")    // past logs, not past history: kept
	pendingMiddle := event(100*day, "open") // idem
	event(300*day, "dead")
	event(300*day, "open")
	recentPending := event(0, "open")

	opts := store.PruneOptions{LogsBefore: time.Now().Add(-30 * day), DryRun: true}
	dry, err := b.st.Prune(b.ctx, opts)
	require.NoError(t, err)
	assert.Equal(t, int64(5), dry.Notifications)
	opts.HistoryBefore = time.Now().Add(-200 * day)
	dry, err = b.st.Prune(b.ctx, opts)
	require.NoError(t, err)
	assert.Equal(t, int64(7), dry.Notifications)

	remaining := func() []int64 {
		rows, err := b.pool.Query(b.ctx, `SELECT id FROM notify_outbox ORDER BY id`)
		require.NoError(t, err)
		var ids []int64
		for rows.Next() {
			var id int64
			require.NoError(t, rows.Scan(&id))
			ids = append(ids, id)
		}
		require.NoError(t, rows.Err())
		return ids
	}
	all := remaining()
	assert.Len(t, all, 11, "a dry run deletes nothing")

	res, err := b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: opts.LogsBefore})
	require.NoError(t, err)
	assert.Equal(t, int64(5), res.Notifications, "only delivered events before the log cutoff")
	res, err = b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: opts.LogsBefore, HistoryBefore: opts.HistoryBefore})
	require.NoError(t, err)
	assert.Equal(t, int64(2), res.Notifications)
	assert.Equal(t, []int64{recentDelivered, deadMiddle, pendingMiddle, recentPending}, remaining())

	// More than one batch (500 rows each): every batch commits, all go.
	_, err = b.pool.Exec(b.ctx, `INSERT INTO notify_outbox (target_id, cluster_id, event, payload, created_at, delivered_at)
SELECT target_id, cluster_id, event, payload, now() - interval '40 days', now() - interval '40 days'
FROM notify_outbox, generate_series(1, 1234) WHERE id = $1`, recentDelivered)
	require.NoError(t, err)
	res, err = b.st.Prune(b.ctx, store.PruneOptions{LogsBefore: opts.LogsBefore})
	require.NoError(t, err)
	assert.Equal(t, int64(1234), res.Notifications)
	assert.Len(t, remaining(), 4)
}
