package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
// delivery of each event with a 500, and records what it accepted.
type receiver struct {
	secret string
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
	if rc.seen[id] == 1 {
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
	rc := &receiver{seen: map[string]int{}, got: make(chan struct{}, 16)}
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
}
