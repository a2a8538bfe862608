package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

const wait = 10 * time.Second

type bundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	st   *store.Store
	logs *syncBuffer
	n    *notify.Notifier
}

// setup gives each test its own database and notifier, and checks when the
// test ends that no goroutine of the notifier outlived its subscriptions.
// The tests do not run in parallel, so the leak check sees only their own.
func setup(t *testing.T) bundle {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	url := testsupport.DatabaseURL(t)
	pool := testsupport.Pool(t, url)
	logs := &syncBuffer{}
	n, err := notify.New(url, notify.Options{
		Name:      "grape-notify-test",
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		Reconnect: backoff.Policy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	require.NoError(t, err)
	return bundle{ctx: context.Background(), url: url, pool: pool, st: store.New(pool), logs: logs, n: n}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recv waits for the next value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("no %s within %s", what, wait)
	}
	var zero T
	return zero
}

// none checks nothing arrives on ch for a short while.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	case <-time.After(300 * time.Millisecond):
	}
}

// listening subscribes and waits until the channel is LISTENed (the first
// Resync), so what is sent next is delivered.
func listening[T any](t *testing.T, n *notify.Notifier, topic notify.Topic[T], buffer int) *notify.Subscription[T] {
	t.Helper()
	sub := notify.Subscribe(n, topic, buffer)
	t.Cleanup(sub.Close)
	recv(t, sub.Resync, "resync once listening")
	require.True(t, n.Alive())
	return sub
}

func (b bundle) notify(t *testing.T, channel, payload string) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `SELECT pg_notify($1, $2)`, channel, payload)
	require.NoError(t, err)
}

// backends counts the notifier's connections.
func (b bundle) backends(t *testing.T) int {
	t.Helper()
	n, err := b.countBackends()
	require.NoError(t, err)
	return n
}

func (b bundle) countBackends() (int, error) {
	var n int
	err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'grape-notify-test' AND datname = current_database()`).Scan(&n)
	return n, err
}

// noBackends is a condition for require.Eventually, which runs it on another
// goroutine: it must not fail the test itself.
func (b bundle) noBackends() bool {
	n, err := b.countBackends()
	return err == nil && n == 0
}

func (b bundle) cluster(t *testing.T, id string) store.Config {
	t.Helper()
	_, err := b.st.CreateCluster(b.ctx, id, "")
	require.NoError(t, err)
	cfg, err := b.st.UpsertConfig(b.ctx, id, "c", json.RawMessage(`{"modules":{}}`), store.ConfigSettings{})
	require.NoError(t, err)
	return cfg
}

// The schema's triggers and this package agree on channels and payloads:
// what the database sends for each event parses into the event it is.
func TestTriggersSendWhatTopicsParse(t *testing.T) {
	b := setup(t)
	cfg := b.cluster(t, "eu-1")
	events := listening(t, b.n, notify.ClusterEvents("eu-1"), 16)
	logs := listening(t, b.n, notify.Logs, 16)

	queued, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfg.ID, RequireApproval: true})
	require.NoError(t, err)
	require.Equal(t, notify.ClusterEvent{Kind: notify.Queued, DeploymentID: queued.ID}, recv(t, events.C, "queued event"))

	// A run parks for approval (status changes are not notified), then is approved.
	_, err = b.st.Claim(b.ctx, "eu-1", "agent-1", time.Minute)
	require.NoError(t, err)
	n, err := b.st.AppendLogs(b.ctx, queued.ID, []int64{1, 2, 3}, []store.Stream{store.StreamAgent, store.StreamStdout, store.StreamStdout}, []string{"a", "b", "c"}, []time.Time{time.Now(), time.Now(), time.Now()})
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	require.Equal(t, notify.LogBatch{DeploymentID: queued.ID, LastSeq: 3}, recv(t, logs.C, "log batch"))
	require.NoError(t, b.st.AwaitApproval(b.ctx, queued.ID, "agent-1"))
	none(t, events.C, "event for a status change")
	_, err = b.st.Approve(b.ctx, queued.ID, "someone", "")
	require.NoError(t, err)
	require.Equal(t, notify.ClusterEvent{Kind: notify.Approved, DeploymentID: queued.ID}, recv(t, events.C, "approved event"))

	// A cancel of a queued deployment: queued, then cancel, and the agent
	// line saying so is a log batch.
	other, err := b.st.UpsertConfig(b.ctx, "eu-1", "other", json.RawMessage(`{"modules":{}}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: other.ID})
	require.NoError(t, err)
	require.Equal(t, notify.ClusterEvent{Kind: notify.Queued, DeploymentID: d.ID}, recv(t, events.C, "queued event"))
	cancelLine := listening(t, b.n, notify.LogsOf(d.ID), 16)
	_, err = b.st.RequestCancel(b.ctx, d.ID, "someone")
	require.NoError(t, err)
	require.Equal(t, notify.ClusterEvent{Kind: notify.Cancel, DeploymentID: d.ID}, recv(t, events.C, "cancel event"))
	require.Equal(t, notify.LogBatch{DeploymentID: d.ID, LastSeq: 1}, recv(t, cancelLine.C, "log batch of the cancel line"))

	// Another cluster's events are on another channel.
	cfg2 := b.cluster(t, "us-1")
	_, err = b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: "us-1", ConfigID: cfg2.ID})
	require.NoError(t, err)
	none(t, events.C, "event of another cluster")
}

func TestEncodeParseRoundTrip(t *testing.T) {
	id := uuid.New()
	for _, ev := range []notify.ClusterEvent{{notify.Queued, id}, {notify.Cancel, id}, {notify.Approved, id}} {
		got, err := notify.ParseClusterEvent(ev.Payload())
		require.NoError(t, err)
		require.Equal(t, ev, got)
	}
	batch := notify.LogBatch{DeploymentID: id, LastSeq: 1 << 40}
	got, err := notify.ParseLogBatch(batch.Payload())
	require.NoError(t, err)
	require.Equal(t, batch, got)
	require.Equal(t, "grape_cluster_eu-1", notify.ClusterEvents("eu-1").Channel())
	require.Equal(t, "grape_logs", notify.Logs.Channel())
}

func TestMalformedPayloadsAreRefused(t *testing.T) {
	id := uuid.NewString()
	for _, p := range []string{"", "queued", "queued:", "queued:not-a-uuid", "deleted:" + id, ":" + id, id} {
		_, err := notify.ParseClusterEvent(p)
		require.Error(t, err, "cluster event %q", p)
	}
	for _, p := range []string{"", id, id + ":", id + ":x", id + ":0", id + ":-4", "nope:7", ":7"} {
		_, err := notify.ParseLogBatch(p)
		require.Error(t, err, "log batch %q", p)
	}
	long := make([]byte, 8000)
	for i := range long {
		long[i] = 'x'
	}
	_, err := notify.ParseLogBatch(string(long))
	require.Less(t, len(err.Error()), 300, "an error quotes only the start of a long payload")
}

// A malformed payload is logged and dropped; the subscription goes on.
func TestMalformedNotificationIgnored(t *testing.T) {
	b := setup(t)
	sub := listening(t, b.n, notify.Logs, 4)
	b.notify(t, "grape_logs", "garbage")
	id := uuid.New()
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 7}.Payload())
	require.Equal(t, notify.LogBatch{DeploymentID: id, LastSeq: 7}, recv(t, sub.C, "the good payload"))
	require.Contains(t, b.logs.String(), "ignoring a malformed notification")
	require.Contains(t, b.logs.String(), "garbage")
}

// Many subscribers of one topic share the one connection, and each gets
// every payload; Where narrows a subscription to what it asked for.
func TestManySubscribersOneConnection(t *testing.T) {
	b := setup(t)
	var subs []*notify.Subscription[notify.LogBatch]
	for range 5 {
		subs = append(subs, listening(t, b.n, notify.Logs, 4))
	}
	mine, other := uuid.New(), uuid.New()
	only := listening(t, b.n, notify.LogsOf(mine), 4)
	events := listening(t, b.n, notify.ClusterEvents("eu-1"), 4)
	require.Equal(t, 1, b.backends(t), "one connection for every subscription")

	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: other, LastSeq: 1}.Payload())
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: mine, LastSeq: 2}.Payload())
	for i, s := range subs {
		require.Equal(t, other, recv(t, s.C, "first batch").DeploymentID, "subscriber %d", i)
		require.Equal(t, mine, recv(t, s.C, "second batch").DeploymentID, "subscriber %d", i)
	}
	require.Equal(t, notify.LogBatch{DeploymentID: mine, LastSeq: 2}, recv(t, only.C, "own batch"))
	none(t, only.C, "another deployment's batch")
	none(t, events.C, "a log batch on the cluster channel")
}

// A closed subscription gets nothing more; others on the channel go on;
// closing the last one closes the connection.
func TestUnsubscribe(t *testing.T) {
	b := setup(t)
	keep := listening(t, b.n, notify.Logs, 4)
	gone := listening(t, b.n, notify.Logs, 4)
	cluster := listening(t, b.n, notify.ClusterEvents("eu-1"), 4)
	gone.Close()
	gone.Close() // twice is harmless
	cluster.Close()

	id := uuid.New()
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 1}.Payload())
	require.Equal(t, id, recv(t, keep.C, "batch").DeploymentID)
	none(t, gone.C, "batch after Close")
	b.notify(t, "grape_cluster_eu-1", notify.ClusterEvent{Kind: notify.Queued, DeploymentID: id}.Payload())
	none(t, cluster.C, "event after Close")

	keep.Close()
	require.False(t, b.n.Alive(), "no subscription, no connection")
	require.Eventually(t, b.noBackends, wait, 10*time.Millisecond, "the connection closes with the last subscription")

	// And a new subscription opens it again.
	again := listening(t, b.n, notify.Logs, 4)
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 2}.Payload())
	require.EqualValues(t, 2, recv(t, again.C, "batch on the new connection").LastSeq)
}

// A subscription made while the connection waits is LISTENed at once.
func TestSubscribeWhileWaiting(t *testing.T) {
	b := setup(t)
	listening(t, b.n, notify.Logs, 4)
	events := listening(t, b.n, notify.ClusterEvents("eu-1"), 4)
	id := uuid.New()
	b.notify(t, "grape_cluster_eu-1", notify.ClusterEvent{Kind: notify.Cancel, DeploymentID: id}.Payload())
	require.Equal(t, notify.ClusterEvent{Kind: notify.Cancel, DeploymentID: id}, recv(t, events.C, "event"))
	require.Equal(t, 1, b.backends(t))
}

// Killing the connection: Alive goes false, the notifier reconnects on its
// own, every subscriber is told to re-read (what was sent meanwhile is lost),
// and delivery goes on.
func TestReconnectAfterTerminate(t *testing.T) {
	b := setup(t)
	logs := listening(t, b.n, notify.Logs, 4)
	events := listening(t, b.n, notify.ClusterEvents("eu-1"), 4)

	var killed int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'grape-notify-test' AND datname = current_database()`).Scan(&killed))
	require.Equal(t, 1, killed)

	recv(t, logs.Resync, "resync of the log subscriber after the reconnect")
	recv(t, events.Resync, "resync of the cluster subscriber after the reconnect")
	require.True(t, b.n.Alive())
	require.Contains(t, b.logs.String(), "LISTEN connection lost")

	id := uuid.New()
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 9}.Payload())
	b.notify(t, "grape_cluster_eu-1", notify.ClusterEvent{Kind: notify.Queued, DeploymentID: id}.Payload())
	require.EqualValues(t, 9, recv(t, logs.C, "batch after the reconnect").LastSeq)
	require.Equal(t, notify.Queued, recv(t, events.C, "event after the reconnect").Kind)
	require.Equal(t, 1, b.backends(t))
}

// Down, the notifier is not alive and keeps trying; up again, it resumes.
func TestDatabaseAwayAndBack(t *testing.T) {
	b := setup(t)
	proxy := testsupport.StartFaultProxy(t, hostPort(t, b.url))
	n, err := notify.New(proxy.URL(b.url), notify.Options{
		Reconnect: backoff.Policy{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	require.NoError(t, err)
	sub := listening(t, n, notify.Logs, 4)

	proxy.Down()
	require.Eventually(t, func() bool { return !n.Alive() }, wait, 10*time.Millisecond, "a cut connection is noticed")
	proxy.Up()
	recv(t, sub.Resync, "resync once back")
	require.True(t, n.Alive())
	id := uuid.New()
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 1}.Payload())
	require.Equal(t, id, recv(t, sub.C, "batch once back").DeploymentID)
}

// A subscriber that falls behind loses payloads but is told to re-read.
func TestOverflowSignalsResync(t *testing.T) {
	b := setup(t)
	sub := listening(t, b.n, notify.Logs, 1)
	id := uuid.New()
	for seq := int64(1); seq <= 3; seq++ {
		b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: seq}.Payload())
	}
	recv(t, sub.Resync, "resync after an overflow")
	require.EqualValues(t, 1, recv(t, sub.C, "the payload that fitted").LastSeq)
}

func TestNewRefusesABadURL(t *testing.T) {
	_, err := notify.New("postgres://user:hunter2@[::1", notify.Options{})
	require.ErrorContains(t, err, "parsing database URL")
	require.NotContains(t, err.Error(), "hunter2")
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

// Idle waits end in a ping, on the same connection: a timed-out wait does
// not cost the connection, and payloads keep coming.
func TestIdleConnectionIsPingedAndKept(t *testing.T) {
	b := setup(t)
	n, err := notify.New(b.url, notify.Options{Name: "grape-notify-test", PingInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	sub := listening(t, n, notify.Logs, 4)
	pid := func() int {
		var pid int
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT pid FROM pg_stat_activity
WHERE application_name = 'grape-notify-test' AND datname = current_database()`).Scan(&pid))
		return pid
	}
	first := pid()
	time.Sleep(300 * time.Millisecond) // many ping intervals, nothing to deliver
	id := uuid.New()
	b.notify(t, "grape_logs", notify.LogBatch{DeploymentID: id, LastSeq: 1}.Payload())
	require.Equal(t, id, recv(t, sub.C, "batch after idle pings").DeploymentID)
	require.Equal(t, first, pid(), "the same connection")
	none(t, sub.Resync, "resync without a reconnect")
}

// Hold keeps the connection without subscribers; release closes it.
func TestHoldKeepsTheConnection(t *testing.T) {
	b := setup(t)
	release := b.n.Hold()
	require.Eventually(t, b.n.Alive, wait, 10*time.Millisecond)
	sub := listening(t, b.n, notify.Logs, 4)
	require.Equal(t, 1, b.n.Subscribers())
	sub.Close()
	require.Zero(t, b.n.Subscribers())
	require.True(t, b.n.Alive(), "held: still connected without subscribers")
	require.Equal(t, 1, b.backends(t))
	release()
	release() // twice is harmless
	require.False(t, b.n.Alive())
	require.Eventually(t, b.noBackends, wait, 10*time.Millisecond)
}

// TestStateMoveTriggerSendsWhatTopicParses: every status a move takes wakes
// the cluster's agents on the StateMoves topic (migration state_move).
func TestStateMoveTriggerSendsWhatTopicParses(t *testing.T) {
	b := setup(t)
	cfg := b.cluster(t, "eu-1")
	moves := listening(t, b.n, notify.StateMoves("eu-1"), 16)
	for _, id := range []string{"a", "b"} {
		require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: id, ClusterID: "eu-1", Hostname: id, Version: "v"}))
	}
	addr := "10.0.0.2:7443"
	require.NoError(t, b.st.SetAgentStateHandoff(b.ctx, "b", &addr))
	_, err := b.st.RecordStateHolder(b.ctx, "eu-1", cfg.ID, uuid.New(), "a")
	require.NoError(t, err)
	m, err := b.st.RequestStateMove(b.ctx, store.StateMoveRequest{ClusterID: "eu-1", ConfigID: cfg.ID, ToAgent: "b", Actor: "alice",
		Timeout: time.Minute, OnlineWithin: time.Minute})
	require.NoError(t, err)
	require.Equal(t, notify.StateMoveEvent{Status: "requested", MoveID: m.ID}, recv(t, moves.C, "requested event"))
	require.NoError(t, b.st.ListenStateMove(b.ctx, m.ID, "b", addr, strings.Repeat("a", 64)))
	require.Equal(t, notify.StateMoveEvent{Status: "listening", MoveID: m.ID}, recv(t, moves.C, "listening event"))
	_, err = b.st.FailStateMove(b.ctx, m.ID, "test")
	require.NoError(t, err)
	require.Equal(t, notify.StateMoveEvent{Status: "failed", MoveID: m.ID}, recv(t, moves.C, "failed event"))

	for _, bad := range []string{"", "requested", ":" + m.ID.String(), "x:not-a-uuid"} {
		_, err := notify.ParseStateMoveEvent(bad)
		require.Error(t, err, bad)
	}
}
