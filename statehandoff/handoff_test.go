package statehandoff

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// world is one cluster with a config whose local state agent-a holds, the
// agents connected as the cluster's agent role (as in production), and a
// person's (owner) store for requests.
type world struct {
	ctx       context.Context
	admin     *store.Store
	adminPool *pgxpool.Pool
	agent     *store.Store
	agentURL  string
	cluster   string
	cfg       store.Config
	a, b      localstate.Dir
	original  map[string][]byte // agent-a's state dir as it was
}

func setup(t *testing.T) *world {
	t.Helper()
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	url := testsupport.DatabaseURL(t)
	pool := testsupport.Pool(t, url)
	w := &world{ctx: ctx, admin: store.New(pool), adminPool: pool, cluster: "mv-" + uuid.NewString()[:8]}
	_, err := w.admin.CreateCluster(ctx, w.cluster, "")
	require.NoError(t, err)
	role, err := w.admin.CreateAgentRole(ctx, w.cluster, store.AgentRoleOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.admin.DropAgentRole(context.Background(), w.cluster) })
	w.agentURL, err = store.AgentURL(url, role.Name, role.Password)
	require.NoError(t, err)
	w.agent = store.New(testsupport.Pool(t, w.agentURL))
	w.cfg, err = w.admin.UpsertConfig(ctx, w.cluster, "prod", json.RawMessage(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	for _, id := range []string{"agent-a", "agent-b"} {
		require.NoError(t, w.agent.RegisterAgent(ctx, store.Agent{ID: id, ClusterID: w.cluster, Hostname: id, Version: "test"}))
	}
	_, err = w.agent.RecordStateHolder(ctx, w.cluster, w.cfg.ID, uuid.New(), "agent-a")
	require.NoError(t, err)

	w.a, w.b = localstate.Dir{DataDir: t.TempDir()}, localstate.Dir{DataDir: t.TempDir()}
	live := w.a.Path(w.cluster, w.cfg.ID.String())
	require.NoError(t, os.MkdirAll(filepath.Dir(live), 0o700))
	for i := 1; i <= 3; i++ {
		require.NoError(t, os.WriteFile(live, tfstate(i), 0o600))
		if i < 3 {
			_, _, err := w.a.Snapshot(w.cluster, w.cfg.ID.String(), fmt.Sprintf("before apply %d", i), time.Now().Add(time.Duration(i)*time.Second))
			require.NoError(t, err)
		}
	}
	w.original = readTree(t, w.a.ConfigDir(w.cluster, w.cfg.ID.String()))
	require.Len(t, w.original, 3, "the state and two kept versions")
	return w
}

func tfstate(serial int) []byte {
	return fmt.Appendf(nil, `{"version":4,"serial":%d,"lineage":"l-1","resources":[{"mode":"managed","type":"aws_vpc","name":"this","instances":[{"attributes":{"id":"vpc-1","secret":"s3cr3t"}}]}]}`, serial)
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return err
	}))
	return out
}

// run starts an agent's service until the test ends.
func (w *world) run(t *testing.T, agentID string, dir localstate.Dir, addr string, withNotifier bool) {
	t.Helper()
	var n *notify.Notifier
	if withNotifier {
		var err error
		n, err = notify.New(w.agentURL, notify.Options{Name: "test-" + agentID})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", agentID)
	s := New(Options{Logger: log, Store: w.agent, Notifier: n, ClusterID: w.cluster, AgentID: agentID, State: dir, Addr: addr, Poll: 200 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// request asks for a move to agent-b (the receiver) as a person would, once
// it said it can receive (its service records that when it starts).
func (w *world) request(t *testing.T) store.StateMove {
	t.Helper()
	var m store.StateMove
	require.Eventually(t, func() bool {
		var err error
		m, err = w.admin.RequestStateMove(w.ctx, store.StateMoveRequest{ClusterID: w.cluster, ConfigID: w.cfg.ID, ToAgent: "agent-b",
			Actor: "alice", Reason: "new machine", Timeout: time.Minute, OnlineWithin: time.Minute})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond)
	return m
}

func (w *world) waitFinal(t *testing.T, id uuid.UUID) store.StateMove {
	t.Helper()
	var m store.StateMove
	require.Eventually(t, func() bool {
		var err error
		m, err = w.admin.GetStateMove(w.ctx, id)
		require.NoError(t, err)
		return m.Status.Final()
	}, 90*time.Second, 100*time.Millisecond)
	return m
}

func (w *world) holder(t *testing.T) string {
	t.Helper()
	h, err := w.admin.StateHolderOf(w.ctx, w.cfg.ID)
	require.NoError(t, err)
	return h.AgentID
}

func TestMoveHandsTheStateToTheOtherAgent(t *testing.T) {
	w := setup(t)
	w.run(t, "agent-a", w.a, "", true)
	w.run(t, "agent-b", w.b, "127.0.0.1:0", false)

	m := w.request(t)
	require.Equal(t, "agent-a", m.FromAgent)
	done := w.waitFinal(t, m.ID)
	require.Equal(t, store.MoveDone, done.Status, "move failed: %s", ptr.Deref(done.Error))
	t.Logf("move requested → done in %s (state and 2 kept versions, poll %s)", done.FinishedAt.Sub(done.CreatedAt).Round(time.Millisecond), 200*time.Millisecond)

	cfgID := w.cfg.ID.String()
	require.Equal(t, w.original, readTree(t, w.b.ConfigDir(w.cluster, cfgID)), "the receiver has the state and its kept versions, byte for byte")
	sum := sha256.Sum256(w.original[localstate.StateFile])
	require.Equal(t, hex.EncodeToString(sum[:]), ptr.Deref(done.StateSHA256))
	require.Equal(t, 3, *done.Files)
	require.Equal(t, "agent-b", w.holder(t))
	require.NotNil(t, done.ReceiverAddr)
	require.True(t, strings.HasPrefix(*done.ReceiverAddr, "127.0.0.1:") && !strings.HasSuffix(*done.ReceiverAddr, ":0"), "the bound port is published: %s", *done.ReceiverAddr)

	// The sender's copy left the live path (after the database said done)
	// and is kept for recovery under state-moved/.
	require.Eventually(t, func() bool {
		_, err := os.Stat(w.a.ConfigDir(w.cluster, cfgID))
		return os.IsNotExist(err)
	}, 10*time.Second, 50*time.Millisecond)
	kept, err := filepath.Glob(filepath.Join(w.a.DataDir, localstate.MovedDir, w.cluster, cfgID, "*-moved-to-agent-b"))
	require.NoError(t, err)
	require.Len(t, kept, 1)
	require.Equal(t, w.original, readTree(t, kept[0]))

	// No secret went into the database: the row and the audit trail hold metadata.
	var rows string
	require.NoError(t, w.adminPool.QueryRow(w.ctx,
		`SELECT (SELECT jsonb_agg(to_jsonb(m)) FROM state_moves m)::text || (SELECT jsonb_agg(to_jsonb(e)) FROM audit_events e WHERE e.cluster_id = $1)::text`, w.cluster).Scan(&rows))
	require.NotContains(t, rows, "s3cr3t")
	var actions []string
	evs, err := w.admin.ListAudit(w.ctx, store.AuditFilter{ClusterID: w.cluster, TargetID: cfgID})
	require.NoError(t, err)
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	require.Subset(t, actions, []string{"state.move_requested", "state.moved"})

	// agent-a runs without --state-handoff-addr: a move back is refused at once.
	_, err = w.admin.RequestStateMove(w.ctx, store.StateMoveRequest{ClusterID: w.cluster, ConfigID: w.cfg.ID, ToAgent: "agent-a",
		Actor: "alice", Timeout: time.Minute, OnlineWithin: time.Minute})
	require.ErrorIs(t, err, store.ErrMoveRefused)
	require.ErrorContains(t, err, "agent agent-a was not started with --state-handoff-addr HOST:PORT")
}

func TestMoveRefusedWhileTerraformHoldsTheLock(t *testing.T) {
	w := setup(t)
	// A process holding the fcntl lock terraform's local backend takes.
	live := w.a.Path(w.cluster, w.cfg.ID.String())
	lock := exec.Command("python3", "-c", `import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(600)`, live)
	out, err := lock.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, lock.Start())
	t.Cleanup(func() { _ = lock.Process.Kill(); _ = lock.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	w.run(t, "agent-a", w.a, "", false)
	w.run(t, "agent-b", w.b, "127.0.0.1:0", true)
	m := w.request(t)
	failed := w.waitFinal(t, m.ID)
	require.Equal(t, store.MoveFailed, failed.Status)
	require.Contains(t, ptr.Deref(failed.Error), "terraform holds the state's lock on agent agent-a")
	require.Equal(t, "agent-a", w.holder(t))
	require.Equal(t, w.original, readTree(t, w.a.ConfigDir(w.cluster, w.cfg.ID.String())), "the holder's state is untouched")
	_, err = os.Stat(w.b.ConfigDir(w.cluster, w.cfg.ID.String()))
	require.True(t, os.IsNotExist(err), "nothing arrived at the receiver")
}

// TestReceiverTrustsOnlyThePinnedListenerAndTheToken plays the sender by
// hand: a dial that pins another certificate fails before anything is sent,
// an offer without the move's one-time token is refused without ending the
// move, and the right one completes it.
func TestReceiverTrustsOnlyThePinnedListenerAndTheToken(t *testing.T) {
	w := setup(t)
	w.run(t, "agent-b", w.b, "127.0.0.1:0", true)
	m := w.request(t)
	require.Eventually(t, func() bool {
		cur, err := w.admin.GetStateMove(w.ctx, m.ID)
		require.NoError(t, err)
		m = cur
		return cur.Status == store.MoveListening
	}, 30*time.Second, 50*time.Millisecond)

	// A client that connects and says nothing holds nobody up.
	idle, err := net.Dial("tcp", *m.ReceiverAddr)
	require.NoError(t, err)
	defer idle.Close()

	token, hash, err := newToken()
	require.NoError(t, err)
	require.NoError(t, w.agent.SendStateMove(w.ctx, m.ID, "agent-a", hash))
	files, release, err := w.a.Export(w.cluster, w.cfg.ID.String())
	require.NoError(t, err)

	_, err = deliver(w.ctx, *m.ReceiverAddr, strings.Repeat("0", 64), newOffer(m.ID, token, files))
	require.ErrorIs(t, err, errPin)

	r, err := deliver(w.ctx, *m.ReceiverAddr, *m.ReceiverCertSHA256, newOffer(m.ID, strings.Repeat("f", 64), files))
	require.NoError(t, err)
	require.False(t, r.OK)
	require.Equal(t, "not the sender this move waits for", r.Error)

	tampered := newOffer(m.ID, token, files)
	tampered.Digests[localstate.StateFile] = strings.Repeat("a", 64)
	r, err = deliver(w.ctx, *m.ReceiverAddr, *m.ReceiverCertSHA256, tampered)
	require.NoError(t, err)
	require.False(t, r.OK)
	require.Contains(t, r.Error, "corrupted in transit")
	failed := w.waitFinal(t, m.ID)
	require.Equal(t, store.MoveFailed, failed.Status, "a corrupted offer with the right token ends the move")
	require.Equal(t, "agent-a", w.holder(t))
	_, err = os.Stat(w.b.ConfigDir(w.cluster, w.cfg.ID.String()))
	require.True(t, os.IsNotExist(err), "nothing was stored")

	// Again, honestly this time.
	release()
	m = w.request(t)
	require.Eventually(t, func() bool {
		cur, err := w.admin.GetStateMove(w.ctx, m.ID)
		require.NoError(t, err)
		m = cur
		return cur.Status == store.MoveListening
	}, 30*time.Second, 50*time.Millisecond)
	token, hash, err = newToken()
	require.NoError(t, err)
	require.NoError(t, w.agent.SendStateMove(w.ctx, m.ID, "agent-a", hash))
	files, release2, err := w.a.Export(w.cluster, w.cfg.ID.String())
	require.NoError(t, err)
	defer release2()
	r, err = deliver(w.ctx, *m.ReceiverAddr, *m.ReceiverCertSHA256, newOffer(m.ID, token, files))
	require.NoError(t, err)
	require.True(t, r.OK, r.Error)
	require.Equal(t, store.MoveDone, w.waitFinal(t, m.ID).Status)
	require.Equal(t, "agent-b", w.holder(t))
	require.Equal(t, w.original, readTree(t, w.b.ConfigDir(w.cluster, w.cfg.ID.String())))
}
