package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/webhook"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// receiver is a webhook endpoint that checks signatures, fails the first
// delivery of each event with a 500 when flaky, and records what it
// accepted.
type receiver struct {
	secret string
	flaky  bool
	mu     sync.Mutex
	seen   map[string]int // delivery id → attempts
	events []map[string]any
	bad    int
	got    chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !webhook.Verify(rc.secret, body, r.Header.Get(webhook.HeaderSignature)) {
		rc.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	id := r.Header.Get(webhook.HeaderDelivery)
	rc.seen[id]++
	if rc.flaky && rc.seen[id] == 1 {
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	var ev map[string]any
	if json.Unmarshal(body, &ev) == nil && ev["event"] == r.Header.Get(webhook.HeaderEvent) {
		rc.events = append(rc.events, ev)
	}
	rc.got <- struct{}{}
}

func TestDeliveryRetriesInOrderSigned(t *testing.T) {
	ctx := context.Background()
	pool := testsupport.DB(t)
	st := store.New(pool)
	cluster := "wh-" + uuid.NewString()[:8]
	_, err := st.CreateCluster(ctx, cluster, "")
	require.NoError(t, err)
	require.NoError(t, st.SetFourEyes(ctx, cluster, false))
	rc := &receiver{flaky: true, seen: map[string]int{}, got: make(chan struct{}, 16)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	target, secret, err := st.AddNotifyTarget(ctx, store.NotifyTarget{ClusterID: cluster, URL: srv.URL + "/hook", Format: "json"})
	require.NoError(t, err)
	rc.secret = secret
	// A target that wants only failures gets nothing from this run.
	_, _, err = st.AddNotifyTarget(ctx, store.NotifyTarget{ClusterID: cluster, URL: "http://127.0.0.1:1/never", Format: "slack",
		Events: []string{"deployment.failed"}})
	require.NoError(t, err)

	// A run that waits for approval, then succeeds: two events, in order.
	cfg, err := st.UpsertConfig(ctx, cluster, "web", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cluster, ConfigID: cfg.ID, RequireApproval: true, RequestedBy: "alice"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, cluster, "agent", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.AwaitApproval(ctx, d.ID, "agent"))
	_, err = st.Approve(ctx, d.ID, "bob", "")
	require.NoError(t, err)
	_, err = st.Claim(ctx, cluster, "agent", time.Minute) // the approved plan resumes
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, d.ID, "agent", store.Outcome{Status: store.StatusSucceeded}))

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- webhook.New(st, webhook.Options{ClusterID: cluster, Interval: 20 * time.Millisecond,
			Retry: backoff.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}}).Run(runCtx)
	}()
	for range 2 {
		select {
		case <-rc.got:
		case <-time.After(30 * time.Second):
			t.Fatal("webhook deliveries did not arrive")
		}
	}
	// The receiver answered; the deliverer records it right after.
	var pending, delivered int
	require.Eventually(t, func() bool {
		err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE delivered_at IS NULL), count(*) FILTER (WHERE delivered_at IS NOT NULL)
FROM notify_outbox WHERE target_id = $1`, target.ID).Scan(&pending, &delivered)
		return err == nil && delivered == 2
	}, 30*time.Second, 10*time.Millisecond)
	require.Zero(t, pending)
	stop()
	require.NoError(t, <-done)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	require.Zero(t, rc.bad, "every delivery verifies")
	require.Len(t, rc.events, 2)
	require.Equal(t, "deployment.awaiting_approval", rc.events[0]["event"])
	require.Equal(t, "deployment.succeeded", rc.events[1]["event"])
	require.Equal(t, d.ID.String(), rc.events[1]["deployment_id"])
	require.Equal(t, "web", rc.events[1]["config_name"])
	for id, n := range rc.seen {
		require.Equal(t, 2, n, "delivery %s: one 500, then one success", id)
	}
	var other int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM notify_outbox WHERE cluster_id = $1 AND target_id <> $2`, cluster, target.ID).Scan(&other))
	require.Zero(t, other, "the failures-only target was not sent a success")
}

func TestSignAndBody(t *testing.T) {
	sig := webhook.Sign("s3cret", []byte(`{"a":1}`))
	require.True(t, webhook.Verify("s3cret", []byte(`{"a":1}`), sig))
	require.False(t, webhook.Verify("s3cret", []byte(`{"a":2}`), sig))
	require.False(t, webhook.Verify("other", []byte(`{"a":1}`), sig))
	b, err := webhook.Body("slack", "deployment.failed", json.RawMessage(`{"cluster_id":"eu-1","config_name":"web","deployment_id":"d1","action":"apply","error":"plan failed"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"text":"*deployment.failed* — cluster `+"`eu-1`"+`, config `+"`web`"+`, apply `+"`d1`"+`: plan failed"}`, string(b))
	b, err = webhook.Body("slack", "deployment.waiting", json.RawMessage(`{"cluster_id":"eu-1","config_name":"web","deployment_id":"d2","action":"apply","reason":"queued","waiting_since":"2026-12-06T10:00:00Z","blocked_by":"d1"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"text":"*deployment.waiting* — cluster `+"`eu-1`"+`, config `+"`web`"+`, apply `+"`d2`"+`: queued since 2026-12-06T10:00:00Z, behind deployment `+"`d1`"+`"}`, string(b))
}

// cluster creates a cluster with a receiver as its one webhook target, for
// events (nil: every event).
func cluster(t *testing.T, st *store.Store, events ...string) (string, *receiver, store.NotifyTarget) {
	t.Helper()
	ctx := t.Context()
	id := "wh-" + uuid.NewString()[:8]
	_, err := st.CreateCluster(ctx, id, "")
	require.NoError(t, err)
	require.NoError(t, st.SetFourEyes(ctx, id, false))
	rc := &receiver{seen: map[string]int{}, got: make(chan struct{}, 64)}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	target, secret, err := st.AddNotifyTarget(ctx, store.NotifyTarget{ClusterID: id, URL: srv.URL + "/hook", Format: "json", Events: events})
	require.NoError(t, err)
	rc.secret = secret
	return id, rc, target
}

func (rc *receiver) accepted() []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.events)
}

// TestWaitingAnnouncedOnce: a plan awaiting approval past half its timeout
// and a run queued behind it past the threshold each reach the receiver as
// one deployment.waiting event, however many agents sweep at once.
func TestWaitingAnnouncedOnce(t *testing.T) {
	ctx := t.Context()
	pool := testsupport.DB(t)
	st := store.New(pool)
	cl, rc, _ := cluster(t, st, "deployment.waiting")
	timeout := 10 * time.Minute
	cfg, err := st.UpsertConfig(ctx, cl, "web", json.RawMessage(`{}`), store.ConfigSettings{ApprovalTimeout: &timeout})
	require.NoError(t, err)
	parked, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cl, ConfigID: cfg.ID, RequireApproval: true, RequestedBy: "alice"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, cl, "agent", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.AwaitApproval(ctx, parked.ID, "agent"))
	behind, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cl, ConfigID: cfg.ID, RequestedBy: "bob"})
	require.NoError(t, err)
	drift, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cl, ConfigID: cfg.ID, Action: store.ActionDrift, RequestedBy: "scheduler"})
	require.NoError(t, err)

	sweep := func() []store.LongWait {
		// Eight agents at once: the database lets exactly one announce each wait.
		var mu sync.Mutex
		var all []store.LongWait
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				ws, err := st.NoteLongWaits(ctx, cl, 30*time.Minute)
				errs <- err
				mu.Lock()
				all = append(all, ws...)
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		return all
	}
	require.Empty(t, sweep(), "nothing has waited long yet")

	_, err = pool.Exec(ctx, `UPDATE deployments SET awaiting_approval_at = now() - interval '6 minutes' WHERE id = $1`, parked.ID)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE deployments SET created_at = now() - interval '45 minutes' WHERE id = ANY ($1)`, []uuid.UUID{behind.ID, drift.ID})
	require.NoError(t, err)
	waits := sweep()
	require.Len(t, waits, 2, "the approval and the queued apply; not the drift check")
	require.Empty(t, sweep(), "announced once")

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- webhook.New(st, webhook.Options{ClusterID: cl, Interval: 20 * time.Millisecond}).Run(runCtx)
	}()
	for range 2 {
		select {
		case <-rc.got:
		case <-time.After(30 * time.Second):
			t.Fatal("deployment.waiting events did not arrive")
		}
	}
	stop()
	require.NoError(t, <-done)

	byID := map[string]map[string]any{}
	for _, ev := range rc.accepted() {
		require.Equal(t, "deployment.waiting", ev["event"])
		byID[ev["deployment_id"].(string)] = ev
	}
	require.Len(t, byID, 2)
	a := byID[parked.ID.String()]
	require.Equal(t, store.WaitAwaitingApproval, a["reason"])
	require.Equal(t, "web", a["config_name"])
	expires, err := time.Parse(time.RFC3339, a["expires_at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(4*time.Minute), expires, time.Minute)
	q := byID[behind.ID.String()]
	require.Equal(t, store.WaitQueued, q["reason"])
	require.Equal(t, parked.ID.String(), q["blocked_by"])
	require.Equal(t, "bob", q["requested_by"])
	require.Nil(t, q["expires_at"])
}

// TestFlushBoundedAndRotation: Flush delivers what a run produced before a
// one-run process exits, gives up waiting on a dead receiver after its
// bound, and signs with the rotated secret from the moment of rotation.
func TestFlushBoundedAndRotation(t *testing.T) {
	ctx := t.Context()
	pool := testsupport.DB(t)
	st := store.New(pool)
	cl, rc, target := cluster(t, st)
	cfg, err := st.UpsertConfig(ctx, cl, "web", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	fail := func() {
		t.Helper()
		d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: cl, ConfigID: cfg.ID})
		require.NoError(t, err)
		_, err = st.ClaimByID(ctx, d.ID, "agent", time.Minute)
		require.NoError(t, err)
		require.NoError(t, st.Finish(ctx, d.ID, "agent", store.Outcome{Status: store.StatusFailed, Kind: store.KindPlan, Error: "boom"}))
	}
	d := webhook.New(st, webhook.Options{ClusterID: cl, Interval: 20 * time.Millisecond,
		Retry: backoff.Policy{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond}})

	head, err := st.NotifyOutboxHead(ctx, cl)
	require.NoError(t, err)
	fail()
	settled, left, err := d.Flush(ctx, head, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, settled)
	require.Zero(t, left.Count)
	require.Len(t, rc.accepted(), 1, "delivered before Flush returned")

	// Rotation: a clean cut. The receiver still holding the old secret
	// refuses the next delivery; with the new one it accepts.
	old := rc.secret
	secret, err := st.RotateNotifySecret(ctx, cl, target.ID)
	require.NoError(t, err)
	require.NotEqual(t, old, secret)
	_, err = st.RotateNotifySecret(ctx, "elsewhere", target.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "the target is named with its cluster")
	head, err = st.NotifyOutboxHead(ctx, cl)
	require.NoError(t, err)
	fail()
	start := time.Now()
	_, left, err = d.Flush(ctx, head, 300*time.Millisecond)
	require.NoError(t, err)
	require.Less(t, time.Since(start), 10*time.Second, "bounded by the wait and one request")
	require.Equal(t, 1, left.Count, "signed with the new secret: the old one refuses it")
	require.Contains(t, left.LastError, "401")
	rc.mu.Lock()
	require.Positive(t, rc.bad)
	rc.secret = secret
	rc.mu.Unlock()
	settled, left, err = d.Flush(ctx, head, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, settled)
	require.Zero(t, left.Count)
	require.Len(t, rc.accepted(), 2)
}
