package reconciler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) {
	if os.Getenv(childAgentEnv) != "" {
		runChildAgent()
		return
	}
	testsupport.Main(m)
}

type bundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	st   *store.Store
}

func setup(t *testing.T) bundle {
	t.Helper()
	t.Parallel()
	url := testsupport.DatabaseURL(t)
	pool := testsupport.Pool(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return bundle{ctx: ctx, url: url, pool: pool, st: store.New(pool)}
}

func (b bundle) configs(t *testing.T, cluster string, n int) []store.Config {
	t.Helper()
	_, err := b.st.CreateCluster(b.ctx, cluster, "")
	require.NoError(t, err)
	var out []store.Config
	for i := 0; i < n; i++ {
		c, err := b.st.UpsertConfig(b.ctx, cluster, fmt.Sprintf("cfg-%d", i), json.RawMessage(`{}`), store.ConfigSettings{})
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

func (b bundle) enqueue(t *testing.T, c store.Config) store.Deployment {
	t.Helper()
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, RequestedBy: "test"})
	require.NoError(t, err)
	return d
}

// startAgent runs an agent until the test ends (or stop is called).
func (b bundle) startAgent(t *testing.T, opts reconciler.Options, work reconciler.Work) (stop func(), agent *reconciler.Agent) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := reconciler.New(b.st, b.url, work, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop, a
}

func (b bundle) waitStatus(t *testing.T, id uuid.UUID, want store.Status, within time.Duration) store.Deployment {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d, err := b.st.GetDeployment(b.ctx, id)
		require.NoError(t, err)
		if d.Status == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s is %s (phase %s, error %v), want %s after %s", id, d.Status, d.PhaseName(), d.Error, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func succeed(context.Context, *reconciler.Run) store.Outcome {
	return store.Outcome{Status: store.StatusSucceeded}
}

type testWriter struct{ t *testing.T }

// onMessage is a slog handler that closes seen the first time a record with
// message msg passes through, so a test can wait for the agent to reach a
// point instead of sleeping.
type onMessage struct {
	msg  string
	seen chan struct{}
	once *sync.Once
	slog.Handler
}

func newOnMessage(msg string, seen chan struct{}, next slog.Handler) onMessage {
	return onMessage{msg, seen, new(sync.Once), next}
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return onMessage{h.msg, h.seen, h.once, h.Handler.WithAttrs(as)}
}

func (h onMessage) WithGroup(name string) slog.Handler {
	return onMessage{h.msg, h.seen, h.once, h.Handler.WithGroup(name)}
}

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func TestTwoAgentsManyDeploymentsNoDoubleClaim(t *testing.T) {
	b := setup(t)
	cfgs := b.configs(t, "eu-1", 10)
	var ids []uuid.UUID
	for i := 0; i < 200; i++ {
		ids = append(ids, b.enqueue(t, cfgs[i%len(cfgs)]).ID)
	}

	var mu sync.Mutex
	runsOf := map[uuid.UUID]int{}
	active := map[uuid.UUID]int{} // config → running now
	maxActive := 0
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		mu.Lock()
		runsOf[r.Deployment.ID]++
		active[r.Deployment.ConfigID]++
		maxActive = max(maxActive, active[r.Deployment.ConfigID])
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		active[r.Deployment.ConfigID]--
		mu.Unlock()
		return store.Outcome{Status: store.StatusSucceeded}
	})
	for _, id := range []string{"agent-a", "agent-b"} {
		b.startAgent(t, reconciler.Options{ClusterID: "eu-1", AgentID: id, Concurrency: 4}, work)
	}
	for _, id := range ids {
		b.waitStatus(t, id, store.StatusSucceeded, time.Minute)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, runsOf, len(ids))
	for id, n := range runsOf {
		require.Equal(t, 1, n, "deployment %s ran %d times", id, n)
	}
	require.Equal(t, 1, maxActive, "two runs of one config overlapped")

	// Both agents did work and the claim counter on every row is 1.
	var claimedBy []string
	rows, err := b.pool.Query(b.ctx, `SELECT DISTINCT claimed_by FROM deployments`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		claimedBy = append(claimedBy, s)
	}
	require.ElementsMatch(t, []string{"agent-a", "agent-b"}, claimedBy)
	var maxAttempt int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT max(attempt) FROM deployments`).Scan(&maxAttempt))
	require.Equal(t, 1, maxAttempt)
}

func TestNotificationWakesAgentFasterThanPolling(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "fast", 1)[0]
	// A poll interval far beyond the assertion: only NOTIFY can be this quick.
	_, agent := b.startAgent(t, reconciler.Options{ClusterID: "fast", AgentID: "a1", PollInterval: time.Hour}, reconciler.WorkFunc(succeed))
	require.Eventually(t, agent.Listening, 10*time.Second, 10*time.Millisecond)
	d := b.enqueue(t, cfg)
	b.waitStatus(t, d.ID, store.StatusSucceeded, 5*time.Second)
}

func TestLostNotificationRecoveredByPolling(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "lossy", 1)[0]
	_, agent := b.startAgent(t, reconciler.Options{ClusterID: "lossy", AgentID: "a1", PollInterval: 300 * time.Millisecond}, reconciler.WorkFunc(succeed))
	require.Eventually(t, agent.Listening, 10*time.Second, 10*time.Millisecond)

	// Kill the LISTEN connection, then queue while it is (probably) down.
	var killed int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'grape-listener' AND datname = current_database()`).Scan(&killed))
	require.Equal(t, 1, killed, "exactly one listener connection")
	d := b.enqueue(t, cfg)
	b.waitStatus(t, d.ID, store.StatusSucceeded, 5*time.Second)

	// And the listener comes back on its own.
	require.Eventually(t, func() bool {
		var n int
		_ = b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'grape-listener' AND datname = current_database()`).Scan(&n)
		return n == 1 && agent.Listening()
	}, 15*time.Second, 50*time.Millisecond)
}

func TestPollOnlyMode(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "pooler", 1)[0]
	b.startAgent(t, reconciler.Options{ClusterID: "pooler", AgentID: "a1", PollOnly: true, PollInterval: 100 * time.Millisecond}, reconciler.WorkFunc(succeed))
	d := b.enqueue(t, cfg)
	b.waitStatus(t, d.ID, store.StatusSucceeded, 5*time.Second)
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'grape-listener' AND datname = current_database()`).Scan(&n))
	require.Zero(t, n, "poll-only mode must not LISTEN")
}

func TestOnlyOwnClusterIsClaimed(t *testing.T) {
	b := setup(t)
	mine := b.configs(t, "mine", 1)[0]
	theirs := b.configs(t, "theirs", 1)[0]
	other := b.enqueue(t, theirs)
	own := b.enqueue(t, mine)
	b.startAgent(t, reconciler.Options{ClusterID: "mine", AgentID: "a1", PollInterval: 50 * time.Millisecond}, reconciler.WorkFunc(succeed))
	b.waitStatus(t, own.ID, store.StatusSucceeded, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	d, err := b.st.GetDeployment(b.ctx, other.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, d.Status)
}

func TestCancelRequestStopsTheRun(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "c", 1)[0]
	started := make(chan struct{})
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		if err := r.SetPhase(ctx, store.PhasePlan); err != nil {
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: err.Error()}
		}
		close(started)
		<-ctx.Done()
		return store.Outcome{Status: store.StatusFailed, Kind: store.KindPlan, Error: "plan interrupted"}
	})
	// No heartbeat within the test: only the notification can deliver the
	// cancel request.
	_, agent := b.startAgent(t, reconciler.Options{ClusterID: "c", AgentID: "a1",
		Lease: 2 * time.Hour, HeartbeatInterval: time.Hour}, work)
	require.Eventually(t, agent.Listening, 10*time.Second, 10*time.Millisecond)
	d := b.enqueue(t, cfg)
	<-started
	_, err := b.st.RequestCancel(b.ctx, d.ID, "alice")
	require.NoError(t, err)
	got := b.waitStatus(t, d.ID, store.StatusCancelled, 20*time.Second)
	require.Equal(t, "cancelled by alice during plan", *got.Error)
	require.Equal(t, store.KindCancelled, *got.ErrorKind)
}

func TestCancelNoticedByHeartbeatWithoutNotify(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "c2", 1)[0]
	started := make(chan struct{})
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		close(started)
		<-ctx.Done()
		return store.Outcome{Status: store.StatusFailed, Kind: store.KindPlan, Error: "interrupted"}
	})
	b.startAgent(t, reconciler.Options{ClusterID: "c2", AgentID: "a1", PollOnly: true, HeartbeatInterval: 200 * time.Millisecond}, work)
	d := b.enqueue(t, cfg)
	<-started
	_, err := b.st.RequestCancel(b.ctx, d.ID, "bob")
	require.NoError(t, err)
	b.waitStatus(t, d.ID, store.StatusCancelled, 10*time.Second)
}

func TestDrainThenAbort(t *testing.T) {
	b := setup(t)
	cfgs := b.configs(t, "drain", 2)
	release := make(chan struct{})
	started := make(chan uuid.UUID, 2)
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		_ = r.SetPhase(ctx, store.PhaseInit)
		started <- r.Deployment.ID
		select {
		case <-release:
			return store.Outcome{Status: store.StatusSucceeded}
		case <-ctx.Done():
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInit, Error: "interrupted"}
		}
	})

	// First signal: the running deployment finishes, nothing new is claimed.
	draining := make(chan struct{})
	logger := slog.New(newOnMessage("draining: waiting for running deployments", draining, slog.NewTextHandler(testWriter{t}, nil)))
	stop, _ := b.startAgent(t, reconciler.Options{ClusterID: "drain", AgentID: "a1", Logger: logger}, work)
	d1 := b.enqueue(t, cfgs[0])
	require.Equal(t, d1.ID, <-started)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	<-draining // the agent has stopped claiming
	d2 := b.enqueue(t, cfgs[1])
	close(release)
	<-stopped
	b.waitStatus(t, d1.ID, store.StatusSucceeded, time.Second)
	got, err := b.st.GetDeployment(b.ctx, d2.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, got.Status, "a draining agent claims nothing new")

	// Second signal: the run is cancelled and ends failed with the reason.
	release = make(chan struct{})
	_, agent := b.startAgent(t, reconciler.Options{ClusterID: "drain", AgentID: "a2"}, work)
	require.Equal(t, d2.ID, <-started)
	agent.Abort()
	got = b.waitStatus(t, d2.ID, store.StatusFailed, 5*time.Second)
	require.Equal(t, "agent shut down during init", *got.Error)
}

func TestOnceRunsAtMostOne(t *testing.T) {
	b := setup(t)
	cfgs := b.configs(t, "once", 2)
	d1 := b.enqueue(t, cfgs[0])
	d2 := b.enqueue(t, cfgs[1])
	a, err := reconciler.New(b.st, b.url, reconciler.WorkFunc(succeed), reconciler.Options{ClusterID: "once", AgentID: "a1", Once: true})
	require.NoError(t, err)
	require.NoError(t, a.Run(b.ctx))
	b.waitStatus(t, d1.ID, store.StatusSucceeded, time.Second)
	got, err := b.st.GetDeployment(b.ctx, d2.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, got.Status)

	// Nothing queued for it: returns at once.
	a, err = reconciler.New(b.st, b.url, reconciler.WorkFunc(succeed), reconciler.Options{ClusterID: "nothing", AgentID: "a3", Once: true})
	require.NoError(t, err)
	_, err = b.st.CreateCluster(b.ctx, "nothing", "")
	require.NoError(t, err)
	done := make(chan error)
	go func() { done <- a.Run(b.ctx) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("--once with an empty queue did not return")
	}
}

func TestWorkPanicFailsDeployment(t *testing.T) {
	b := setup(t)
	cfg := b.configs(t, "panic", 1)[0]
	b.startAgent(t, reconciler.Options{ClusterID: "panic", AgentID: "a1"}, reconciler.WorkFunc(func(context.Context, *reconciler.Run) store.Outcome {
		panic("boom")
	}))
	d := b.enqueue(t, cfg)
	got := b.waitStatus(t, d.ID, store.StatusFailed, 5*time.Second)
	require.Contains(t, *got.Error, "boom")
}

// --- a real agent process, killed with SIGKILL ---

const childAgentEnv = "GRAPE_TEST_CHILD_AGENT"

// runChildAgent is the test binary re-executed as an agent whose work enters
// the phase named in GRAPE_TEST_CHILD_PHASE and then hangs until killed.
func runChildAgent() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("GRAPE_TEST_CHILD_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	phase := store.Phase(os.Getenv("GRAPE_TEST_CHILD_PHASE"))
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		if err := r.SetPhase(ctx, phase); err != nil {
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: err.Error()}
		}
		// The parent test reads this marker from the child process's stdout.
		fmt.Fprintln(os.Stdout, "IN-PHASE", r.Deployment.ID)
		select {}
	})
	a, err := reconciler.New(store.New(pool), os.Getenv("GRAPE_TEST_CHILD_DB"), work, reconciler.Options{
		ClusterID: os.Getenv("GRAPE_TEST_CHILD_CLUSTER"), AgentID: "doomed", Lease: time.Second, HeartbeatInterval: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_ = a.Run(ctx)
}

func TestKilledAgentLeaseExpires(t *testing.T) {
	cases := []struct {
		phase  store.Phase
		status store.Status
		errMsg string
	}{
		{store.PhasePlan, store.StatusSucceeded, ""}, // requeued, then run by the survivor
		{store.PhaseApply, store.StatusFailed, "agent doomed lost during apply: infrastructure may be partly changed; check the state (and any state lock it left) before deploying again"},
	}
	for _, tc := range cases {
		t.Run(string(tc.phase), func(t *testing.T) {
			b := setup(t)
			cluster := "kill-" + string(tc.phase)
			cfg := b.configs(t, cluster, 1)[0]
			d := b.enqueue(t, cfg)

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childAgentEnv+"=1", "GRAPE_TEST_CHILD_DB="+b.url,
				"GRAPE_TEST_CHILD_PHASE="+string(tc.phase), "GRAPE_TEST_CHILD_CLUSTER="+cluster)
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			buf := make([]byte, 256)
			n, err := out.Read(buf) // "IN-PHASE <id>"
			require.NoError(t, err)
			require.Contains(t, string(buf[:n]), "IN-PHASE "+d.ID.String())
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()

			// A surviving agent of the cluster notices the expired lease.
			b.startAgent(t, reconciler.Options{ClusterID: cluster, AgentID: "survivor", RescueInterval: 200 * time.Millisecond, PollInterval: 100 * time.Millisecond}, reconciler.WorkFunc(succeed))
			got := b.waitStatus(t, d.ID, tc.status, 15*time.Second)
			if tc.errMsg != "" {
				require.Equal(t, tc.errMsg, *got.Error)
				require.Equal(t, store.KindAgentLost, *got.ErrorKind)
				require.Equal(t, 1, got.Attempt, "never re-applied")
			} else {
				require.Equal(t, 2, got.Attempt)
				require.Equal(t, "survivor", *got.ClaimedBy)
			}
			lines, err := b.st.ReadLogs(b.ctx, d.ID, 0, 100)
			require.NoError(t, err)
			var notes []string
			for _, l := range lines {
				notes = append(notes, l.Line)
			}
			require.Contains(t, fmt.Sprint(notes), "agent doomed lost during "+string(tc.phase))
		})
	}
}

// counting is a slog handler that counts the records with message msg.
type counting struct {
	msg string
	n   *atomic.Int32
	slog.Handler
}

func (h counting) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h counting) WithAttrs(as []slog.Attr) slog.Handler {
	return counting{h.msg, h.n, h.Handler.WithAttrs(as)}
}

// TestLongQueuedWaitAnnouncedOnce: a run queued behind another of its
// config past WaitNotifyAfter is announced by the agents' rescue loop, by
// one of two agents, once.
func TestLongQueuedWaitAnnouncedOnce(t *testing.T) {
	b := setup(t)
	cfgs := b.configs(t, "waits", 1)
	blocker := b.enqueue(t, cfgs[0])
	_, err := b.st.ClaimByID(b.ctx, blocker.ID, "elsewhere", time.Hour)
	require.NoError(t, err)
	behind := b.enqueue(t, cfgs[0])
	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET created_at = now() - interval '2 hours' WHERE id = $1`, behind.ID)
	require.NoError(t, err)

	const msg = "deployment queued long behind another deployment of its config"
	var n atomic.Int32
	seen := make(chan struct{})
	for _, id := range []string{"w1", "w2"} {
		base := slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})
		log := slog.New(newOnMessage(msg, seen, counting{msg, &n, base}))
		stop, _ := b.startAgent(t, reconciler.Options{ClusterID: "waits", AgentID: id, RescueInterval: 20 * time.Millisecond,
			WaitNotifyAfter: time.Hour, Logger: log}, reconciler.WorkFunc(succeed))
		defer stop()
	}
	select {
	case <-seen:
	case <-time.After(30 * time.Second):
		t.Fatal("the long wait was not announced")
	}
	again, err := b.st.NoteLongWaits(b.ctx, "waits", time.Hour)
	require.NoError(t, err)
	require.Empty(t, again, "already noted")
	got, err := b.st.GetDeployment(b.ctx, behind.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, got.Status, "still behind its blocker")
	var notices int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM deployment_wait_notices WHERE deployment_id = $1`, behind.ID).Scan(&notices))
	require.Equal(t, 1, notices)
	require.EqualValues(t, 1, n.Load(), "one agent logged it, once")
}
