package auditnote_test

import (
	"context"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/auditnote"
	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestMain(m *testing.M) { testsupport.Main(m) }

func ptr[T any](v T) *T { return &v }

func TestEventForGolden(t *testing.T) {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	kindGit, kindRejected := store.ErrorKind("git"), store.ErrorKind("rejected")
	drifted := store.DriftDrifted
	ends := []store.Ended{
		{ConfigName: "prod", Deployment: store.Deployment{
			ID: uuid.MustParse("5f1c0000-0000-4000-8000-000000000001"), ClusterID: "eu-1", Action: store.ActionApply,
			Status: store.StatusSucceeded, ConfigVersion: ptr(3), RequestedBy: "alice", ApprovedBy: ptr("bob"),
			StartedAt: ptr(start), FinishedAt: ptr(start.Add(95 * time.Second)),
			PlanSummary: json.RawMessage(`{"add":2,"change":1,"destroy":1,"replace":1,"resources":[
				{"address":"aws_vpc.this","actions":["create"]},{"address":"aws_subnet.a","actions":["update"]},
				{"address":"aws_eip.nat","actions":["delete","create"]},{"address":"data.aws_ami.x","actions":["no-op"]}]}`),
			Cost: json.RawMessage(`{"currency":"USD","total_monthly_cost":"80.00","diff_total_monthly_cost":"12.40"}`)}},
		{ConfigName: "prod", Deployment: store.Deployment{
			ID: uuid.MustParse("5f1c0000-0000-4000-8000-000000000002"), ClusterID: "eu-1", Action: store.ActionApply,
			Status: store.StatusFailed, ErrorKind: &kindGit, Error: ptr("git history rewritten: branch main of git://x no longer contains commit aaaa"),
			RequestedBy: "alice", StartedAt: ptr(start), FinishedAt: ptr(start.Add(time.Second))}},
		{ConfigName: "prod", Deployment: store.Deployment{
			ID: uuid.MustParse("5f1c0000-0000-4000-8000-000000000003"), ClusterID: "eu-1", Action: store.ActionApply,
			Status: store.StatusCancelled, ErrorKind: &kindRejected, Error: ptr("rejected by carol"),
			RequestedBy: "alice", StartedAt: ptr(start), FinishedAt: ptr(start.Add(time.Hour))}},
		{ConfigName: "prod", DriftStatus: &drifted,
			DriftDetails: json.RawMessage(`{"resources":[{"address":"aws_vpc.this","action":"update","attributes":["tags"]}]}`),
			Deployment: store.Deployment{
				ID: uuid.MustParse("5f1c0000-0000-4000-8000-000000000004"), ClusterID: "eu-1", Action: store.ActionDrift,
				Status: store.StatusSucceeded, RequestedBy: "grape drift", StartedAt: ptr(start), FinishedAt: ptr(start.Add(11 * time.Second))}},
	}
	var got strings.Builder
	for _, e := range ends {
		text := auditnote.EventFor(e, "terraform 1.11.4").Text()
		require.True(t, auditnote.HasEvent("Someone's note\n\n"+text+"\nGrape later\n", e.ID.String(), string(e.Status)))
		require.False(t, auditnote.HasEvent(text, e.ID.String(), "in_progress"))
		got.WriteString(text + "\n")
	}
	golden := filepath.Join("testdata", "events.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), got.String())
}

// TestSweepWritesEveryEndOnceAndWaitsForTheRemote: own runs, a rejection by
// a person and a drift check get their event once, even after repeated
// sweeps and from two agents; with the remote down they wait and arrive
// once it is back.
func TestSweepWritesEveryEndOnceAndWaitsForTheRemote(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := testsupport.DB(t)
	st := store.New(pool)
	_, err := st.CreateCluster(ctx, "eu-1", "")
	require.NoError(t, err)
	cfg, err := st.UpsertConfig(ctx, "eu-1", "prod", json.RawMessage(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)

	srv := testsupport.StartGitServer(t)
	srv.CreateRepo(t, "ws.git")
	u, err := url.Parse(srv.GitURL("ws.git"))
	require.NoError(t, err)
	proxy := testsupport.StartFaultProxy(t, u.Host)
	open := func() *gitstore.Store {
		g, err := gitstore.Open(ctx, gitstore.Options{URL: proxy.URL(srv.GitURL("ws.git")), Dir: filepath.Join(t.TempDir(), "clone"), NetworkRetry: 300 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { g.Close() })
		return g
	}
	ga, gb := open(), open()
	res, err := ga.Commit(ctx, gitstore.Change{ClusterID: "eu-1", ConfigName: "prod", Files: map[string][]byte{"main.tf": []byte("# x\n")}, Subject: "apply prod"})
	require.NoError(t, err)

	secret := "hunter2-very-secret-value"
	end := func(status store.Status, kind, msg string) uuid.UUID {
		d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfg.ID, RequestedBy: "alice"})
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `UPDATE deployments SET status = $2, started_at = now(), finished_at = now(), commit_sha = $3,
    error_kind = nullif($4, ''), error = nullif($5, '') WHERE id = $1`, d.ID, status, res.SHA, kind, msg)
		require.NoError(t, err)
		return d.ID
	}
	ok := end(store.StatusSucceeded, "", "")
	rejected := end(store.StatusCancelled, "rejected", "rejected by carol: password "+secret+" leaked in plan")
	// A plan approved before any sweep saw it parked.
	pd, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfg.ID, RequestedBy: "alice", RequireApproval: true})
	require.NoError(t, err)
	approved := pd.ID
	for _, q := range []string{
		`UPDATE deployments SET status = 'awaiting_approval', started_at = now(), commit_sha = $2 WHERE id = $1`,
		`UPDATE deployments SET approved_at = now(), approved_by = 'bob' WHERE id = $1 AND $2 <> ''`,
		`UPDATE deployments SET status = 'succeeded', finished_at = now() WHERE id = $1 AND $2 <> ''`,
	} {
		_, err = pool.Exec(ctx, q, approved, res.SHA)
		require.NoError(t, err)
	}

	var pending []int
	writer := func(g *gitstore.Store) *auditnote.Writer {
		return auditnote.New(auditnote.Writer{Git: g, Store: st, ClusterID: "eu-1", Engine: "terraform 1.11.4",
			Redactor: redact.New(8, secret), Pending: func(n int) { pending = append(pending, n) }})
	}
	wa, wb := writer(ga), writer(gb)

	proxy.Down()
	require.NoError(t, wa.Sweep(ctx), "a remote that is away is not an error")
	require.Equal(t, 4, pending[len(pending)-1])
	require.NoError(t, wa.Sweep(ctx))
	require.Equal(t, 4, pending[len(pending)-1], "a second sweep adds nothing twice")

	proxy.Up()
	require.NoError(t, wb.Sweep(ctx), "the other agent writes the same events")
	require.NoError(t, wa.Sweep(ctx))
	require.Zero(t, pending[len(pending)-1])

	clone := t.TempDir()
	testsupport.RunGit(t, "", "clone", "--quiet", "--bare", srv.GitURL("ws.git"), clone)
	testsupport.RunGit(t, clone, "fetch", "--quiet", "origin", "refs/notes/grape:refs/notes/grape")
	log := testsupport.RunGit(t, clone, "log", "--notes=grape")
	assert.Equal(t, 1, strings.Count(log, "Deployment: "+ok.String()), log)
	assert.Equal(t, 1, strings.Count(log, "Deployment: "+rejected.String()), log)
	assert.Contains(t, log, "Error: rejected: rejected by carol")
	assert.NotContains(t, log, secret)
	assert.Contains(t, log, "Grape apply succeeded")
	assert.Contains(t, log, "Grape apply rejected")
	assert.Equal(t, 2, strings.Count(log, "Deployment: "+approved.String()), "parked, then applied:\n%s", log)
	parked := strings.Index(log, "Deployment: "+approved.String()+"\n    Config: prod@v1 (cluster eu-1)\n    Action: apply\n    Status: awaiting_approval")
	applied := strings.Index(log, "Deployment: "+approved.String()+"\n    Config: prod@v1 (cluster eu-1)\n    Action: apply\n    Status: succeeded")
	assert.True(t, parked >= 0 && applied > parked, "the parked event comes first:\n%s", log)
}
