package store_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	gptr "github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/store"
)

func TestStateMoveRequestRefusals(t *testing.T) {
	b := setup(t)
	cfg := b.config(t, "mv", "prod")
	_, err := b.st.CreateCluster(b.ctx, "other", "")
	require.NoError(t, err)
	req := func(to string) error {
		_, err := b.st.RequestStateMove(b.ctx, store.StateMoveRequest{ClusterID: "mv", ConfigID: cfg.ID, ToAgent: to, Actor: "alice",
			Timeout: time.Minute, OnlineWithin: time.Minute})
		return err
	}
	register := func(id, cluster string) {
		require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: id, ClusterID: cluster, Hostname: id, Version: "v"}))
	}

	// Each refusal names what to do; each is checked in the order a person meets them.
	require.ErrorContains(t, req("b"), "no agent holds a local state of this config")
	register("a", "mv")
	_, err = b.st.RecordStateHolder(b.ctx, "mv", cfg.ID, uuid.New(), "a")
	require.NoError(t, err)
	require.ErrorContains(t, req("a"), "agent a holds the state already")
	require.ErrorContains(t, req("b"), "b is not an agent of cluster mv")
	register("elsewhere", "other")
	require.ErrorContains(t, req("elsewhere"), "elsewhere is not an agent of cluster mv")
	register("b", "mv")
	require.ErrorContains(t, req("b"), "agent b was not started with --state-handoff-addr HOST:PORT")
	require.NoError(t, b.st.SetAgentStateHandoff(b.ctx, "b", gptr.To("10.0.0.2:7443")))
	require.NoError(t, b.st.AgentStopped(b.ctx, "b"))
	require.ErrorContains(t, req("b"), "agent b is offline")
	register("b", "mv")
	require.NoError(t, b.st.AgentStopped(b.ctx, "a"))
	require.ErrorContains(t, req("b"), "agent a, which holds the state, is offline: only it can hand the state over")
	register("a", "mv")

	running := b.enqueue(t, "mv", cfg.ID, store.ActionApply)
	_, err = b.st.Claim(b.ctx, "mv", "a", time.Minute)
	require.NoError(t, err)
	require.ErrorContains(t, req("b"), "deployment "+running.String()+" of this config is in_progress")
	require.NoError(t, b.st.Finish(b.ctx, running, "a", store.Outcome{Status: store.StatusSucceeded}))
	require.ErrorIs(t, req("a"), store.ErrMoveRefused, "refusals are typed")

	require.NoError(t, req("b"))
	require.ErrorContains(t, req("b"), "a move of this config's state is already under way")
}

func TestStateMoveLifecycle(t *testing.T) {
	b := setup(t)
	cfg := b.config(t, "mv", "prod")
	for _, id := range []string{"a", "b"} {
		require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: id, ClusterID: "mv", Hostname: id, Version: "v"}))
	}
	require.NoError(t, b.st.SetAgentStateHandoff(b.ctx, "b", gptr.To("10.0.0.2:7443")))
	_, err := b.st.RecordStateHolder(b.ctx, "mv", cfg.ID, uuid.New(), "a")
	require.NoError(t, err)
	m, err := b.st.RequestStateMove(b.ctx, store.StateMoveRequest{ClusterID: "mv", ConfigID: cfg.ID, ToAgent: "b", Actor: "alice",
		Reason: "new machine", Timeout: time.Minute, OnlineWithin: time.Minute})
	require.NoError(t, err)
	require.Equal(t, store.MoveRequested, m.Status)
	require.Equal(t, "a", m.FromAgent)

	// While the move is open the holder does not take the config's deployments.
	queued := b.enqueue(t, "mv", cfg.ID, store.ActionApply)
	_, err = b.st.Claim(b.ctx, "mv", "a", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = b.st.ClaimByID(b.ctx, queued, "a", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	waiting, err := b.st.GetDeployment(b.ctx, queued)
	require.NoError(t, err)
	why, err := b.st.WaitReason(b.ctx, waiting, time.Minute)
	require.NoError(t, err)
	require.Contains(t, why, "waiting for the move of this config's state from agent a to agent b to end (move "+m.ID.String()+", requested; it times out at ")

	// Steps out of turn are refused.
	require.ErrorIs(t, b.st.SendStateMove(b.ctx, m.ID, "a", hex64('1')), store.ErrNotFound, "nobody listens yet")
	require.ErrorIs(t, b.st.ListenStateMove(b.ctx, m.ID, "a", "x:1", hex64('2')), store.ErrNotFound, "a is not the receiver")
	require.NoError(t, b.st.ListenStateMove(b.ctx, m.ID, "b", "10.0.0.2:7443", hex64('2')))
	require.ErrorIs(t, b.st.CompleteStateMove(b.ctx, m.ID, "b", hex64('3'), 1), store.ErrMoveRefused, "nothing was sent")
	require.ErrorIs(t, b.st.SendStateMove(b.ctx, m.ID, "b", hex64('1')), store.ErrNotFound, "b is not the holder")
	require.NoError(t, b.st.SendStateMove(b.ctx, m.ID, "a", hex64('1')))
	require.ErrorIs(t, b.st.CompleteStateMove(b.ctx, m.ID, "a", hex64('3'), 1), store.ErrMoveRefused, "a is not the receiver")
	require.NoError(t, b.st.CompleteStateMove(b.ctx, m.ID, "b", hex64('3'), 4))

	done, err := b.st.GetStateMove(b.ctx, m.ID)
	require.NoError(t, err)
	require.Equal(t, store.MoveDone, done.Status)
	require.Equal(t, hex64('3'), gptr.Deref(done.StateSHA256))
	h, err := b.st.StateHolderOf(b.ctx, cfg.ID)
	require.NoError(t, err)
	require.Equal(t, "b", h.AgentID)
	ok, err := b.st.FailStateMove(b.ctx, m.ID, "late")
	require.NoError(t, err)
	require.False(t, ok, "a done move stays done")

	// Now b takes the config's deployments, and a does not.
	_, err = b.st.Claim(b.ctx, "mv", "a", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	d, err := b.st.Claim(b.ctx, "mv", "b", time.Minute)
	require.NoError(t, err)
	require.Equal(t, queued, d.ID)
	require.NoError(t, b.st.Finish(b.ctx, d.ID, "b", store.Outcome{Status: store.StatusSucceeded}))

	// A move nobody serves expires with what it waited for.
	_, err = b.st.RequestStateMove(b.ctx, store.StateMoveRequest{ClusterID: "mv", ConfigID: cfg.ID, ToAgent: "a", Actor: "alice",
		Timeout: time.Minute, OnlineWithin: time.Minute})
	require.ErrorContains(t, err, "agent a was not started with --state-handoff-addr")
	require.NoError(t, b.st.SetAgentStateHandoff(b.ctx, "a", gptr.To("10.0.0.1:7443")))
	back, err := b.st.RequestStateMove(b.ctx, store.StateMoveRequest{ClusterID: "mv", ConfigID: cfg.ID, ToAgent: "a", Actor: "alice",
		Timeout: time.Minute, OnlineWithin: time.Minute})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE state_moves SET expires_at = now() - interval '1 second' WHERE id = $1`, back.ID)
	require.NoError(t, err)
	expired, err := b.st.ExpireStateMoves(b.ctx, "mv")
	require.NoError(t, err)
	require.Len(t, expired, 1)
	require.Equal(t, store.MoveFailed, expired[0].Status)
	require.Equal(t, "timed out: agent a never opened its listener (is it running, with --state-handoff-addr?); nothing was moved", gptr.Deref(expired[0].Error))

	var actions []string
	evs, err := b.st.ListAudit(b.ctx, store.AuditFilter{ClusterID: "mv", TargetID: cfg.ID.String()})
	require.NoError(t, err)
	for _, e := range evs {
		if len(e.Action) > 6 && e.Action[:6] == "state." {
			actions = append(actions, e.Action)
		}
	}
	require.Equal(t, []string{"state.move_requested", "state.moved", "state.move_requested", "state.move_failed"}, actions)
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
