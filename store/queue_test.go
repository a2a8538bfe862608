package store_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

func TestQueuePosition(t *testing.T) {
	b := setup(t)
	cfg := b.config(t, "qc", "prod")
	other := b.config(t, "qc2", "prod")
	enqueue := func(c store.Config) store.Deployment {
		d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID})
		require.NoError(t, err)
		return d
	}
	first, second, third := enqueue(cfg), enqueue(cfg), enqueue(cfg)
	enqueue(other) // another config's queue does not count

	q, err := b.st.QueuePosition(b.ctx, third.ID, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, store.QueueInfo{Position: 3}, q)

	// Two agents start, one stops: one online. The claim takes the first.
	for _, id := range []string{"a1", "a2"} {
		require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: id, ClusterID: "qc", Hostname: "h", Version: "v"}))
	}
	require.NoError(t, b.st.AgentStopped(b.ctx, "a2"))
	claimed, err := b.st.Claim(b.ctx, "qc", "a1", time.Minute)
	require.NoError(t, err)
	require.Equal(t, first.ID, claimed.ID)

	q, err = b.st.QueuePosition(b.ctx, second.ID, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, store.QueueInfo{Position: 1, Active: &first.ID, AgentsOnline: 1}, q)

	// An agent whose heartbeat is older than the threshold is offline.
	_, err = b.pool.Exec(b.ctx, `UPDATE agents SET last_heartbeat_at = now() - interval '1 minute' WHERE id = 'a1'`)
	require.NoError(t, err)
	q, err = b.st.QueuePosition(b.ctx, third.ID, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 2, q.Position)
	assert.Zero(t, q.AgentsOnline)

	_, err = b.st.QueuePosition(b.ctx, uuid.New(), time.Second)
	require.ErrorIs(t, err, store.ErrNotFound)
}
