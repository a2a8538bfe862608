package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// QueueInfo says where a queued deployment stands, for a person waiting on
// it (`grape logs --follow`).
type QueueInfo struct {
	// Position is its place in its config's queue: 1 runs next. Deployments
	// of one config run one at a time, oldest first.
	Position int `db:"position"`
	// Active is the config's deployment holding the queue (in progress or
	// awaiting approval), if any.
	Active *uuid.UUID `db:"active"`
	// AgentsOnline counts the cluster's agents that are running and
	// heartbeated within the offline threshold.
	AgentsOnline int `db:"agents_online"`
}

// QueuePosition reports a deployment's place in its config's queue and how
// many agents of its cluster are online (heartbeat newer than offlineAfter,
// on the database's clock).
func (s *Store) QueuePosition(ctx context.Context, id uuid.UUID, offlineAfter time.Duration) (QueueInfo, error) {
	rows, err := s.db().Query(ctx, `
SELECT
  (SELECT count(*) FROM deployments o
   WHERE o.config_id = d.config_id AND o.status = 'queued'
     AND (o.created_at, o.id) <= (d.created_at, d.id))::int AS position,
  (SELECT o.id FROM deployments o
   WHERE o.config_id = d.config_id AND o.status IN ('in_progress', 'awaiting_approval')
   ORDER BY o.created_at LIMIT 1) AS active,
  (SELECT count(*) FROM agents a
   WHERE a.cluster_id = d.cluster_id AND a.stopped_at IS NULL
     AND a.last_heartbeat_at > now() - make_interval(secs => $2))::int AS agents_online
FROM deployments d WHERE d.id = $1`, id, offlineAfter.Seconds())
	if err != nil {
		return QueueInfo{}, fmt.Errorf("reading queue position of deployment %s: %w", id, err)
	}
	q, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[QueueInfo])
	if errors.Is(err, pgx.ErrNoRows) {
		return QueueInfo{}, fmt.Errorf("deployment %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return QueueInfo{}, fmt.Errorf("reading queue position of deployment %s: %w", id, err)
	}
	return q, nil
}
