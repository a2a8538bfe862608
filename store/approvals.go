package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ApprovalExpiredReason starts the error of a deployment whose approval
// expired.
const ApprovalExpiredReason = "approval expired"

// ExpireApprovals ends the cluster's deployments that have awaited approval
// longer than their config's approval_timeout: cancelled, "approval
// expired", with a line in their log. The planning agent discards the saved
// plan when it sees the status. RescueExpired runs the same sweep, so every
// agent's rescue loop expires approvals; SKIP LOCKED keeps two sweepers off
// the same row.
func (s *Store) ExpireApprovals(ctx context.Context, clusterID string) ([]Rescued, error) {
	var out []Rescued
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) (err error) {
		out, err = expireApprovals(ctx, tx, clusterID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("expiring approvals of cluster %s: %w", clusterID, err)
	}
	return out, nil
}

func expireApprovals(ctx context.Context, tx pgx.Tx, clusterID string) ([]Rescued, error) {
	rows, err := tx.Query(ctx, `SELECT d.id, extract(epoch FROM c.approval_timeout)::bigint FROM deployments d
JOIN configs c ON c.id = d.config_id
WHERE d.cluster_id = $1 AND d.status = 'awaiting_approval'
  AND coalesce(d.awaiting_approval_at, d.updated_at) + c.approval_timeout < now()
FOR UPDATE OF d SKIP LOCKED`, clusterID)
	if err != nil {
		return nil, err
	}
	type expired struct {
		id      uuid.UUID
		timeout int64
	}
	var due []expired
	for rows.Next() {
		var e expired
		if err := rows.Scan(&e.id, &e.timeout); err != nil {
			rows.Close()
			return nil, err
		}
		due = append(due, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []Rescued
	for _, e := range due {
		msg := fmt.Sprintf("%s: nobody approved or rejected the plan within %s (the config's approval timeout); the plan was discarded, queue a new deployment to plan again",
			ApprovalExpiredReason, time.Duration(e.timeout)*time.Second)
		rows, err := tx.Query(ctx, `UPDATE deployments SET status = 'cancelled', error_kind = 'cancelled', error = $2,
    finished_at = now(), lease_expires_at = NULL WHERE id = $1 RETURNING `+deploymentColumns, e.id, msg)
		if err != nil {
			return nil, fmt.Errorf("expiring deployment %s: %w", e.id, err)
		}
		d, err := collectDeployment(rows, "deployment")
		if err != nil {
			return nil, fmt.Errorf("expiring deployment %s: %w", e.id, err)
		}
		if err := appendAgentLine(ctx, tx, e.id, msg); err != nil {
			return nil, err
		}
		out = append(out, Rescued{Deployment: d, Decision: RescueDecision{
			Outcome: Outcome{Status: StatusCancelled, Kind: KindCancelled, Error: msg}, Note: msg}})
	}
	return out, nil
}

// Blocker is the deployment a config's later runs wait for.
type Blocker struct {
	Deployment Deployment
	// ExpiresAt is when an approval wait ends by itself; nil otherwise.
	ExpiresAt *time.Time
}

// Describe says in one sentence what a run of the config waits for.
func (b Blocker) Describe(now time.Time) string {
	d := b.Deployment
	switch d.Status {
	case StatusAwaitingApproval:
		since := d.UpdatedAt
		if d.AwaitingApprovalAt != nil {
			since = *d.AwaitingApprovalAt
		}
		msg := fmt.Sprintf("waiting for deployment %s, which has awaited approval for %s (grape approve|reject %s)",
			d.ID, now.Sub(since).Round(time.Second), d.ID)
		if b.ExpiresAt != nil {
			msg += fmt.Sprintf("; it expires at %s", b.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return msg
	default:
		return fmt.Sprintf("waiting for deployment %s (%s, %s)", d.ID, d.Status, d.Action)
	}
}

// ConfigBlocker returns the active deployment (in progress or awaiting
// approval) that holds the config's slot, or ErrNotFound when none does.
func (s *Store) ConfigBlocker(ctx context.Context, configID uuid.UUID) (Blocker, error) {
	rows, err := s.db().Query(ctx, `SELECT `+deploymentColumns+` FROM deployments
WHERE config_id = $1 AND status IN ('in_progress', 'awaiting_approval') LIMIT 1`, configID)
	if err != nil {
		return Blocker{}, fmt.Errorf("reading what blocks config %s: %w", configID, err)
	}
	d, err := collectDeployment(rows, "active deployment")
	if err != nil {
		return Blocker{}, err
	}
	b := Blocker{Deployment: d}
	if d.Status == StatusAwaitingApproval {
		var at time.Time
		if err := s.db().QueryRow(ctx, `SELECT coalesce(d.awaiting_approval_at, d.updated_at) + c.approval_timeout
FROM deployments d JOIN configs c ON c.id = d.config_id WHERE d.id = $1`, d.ID).Scan(&at); err != nil {
			return Blocker{}, fmt.Errorf("reading approval expiry of deployment %s: %w", d.ID, err)
		}
		b.ExpiresAt = &at
	}
	return b, nil
}

// Reasons a deployment waits (LongWait.Reason, the "reason" of a
// deployment.waiting event).
const (
	WaitAwaitingApproval = "awaiting_approval"
	WaitQueued           = "queued"
)

// LongWait is a deployment that has waited too long, announced once.
type LongWait struct {
	DeploymentID uuid.UUID  `db:"deployment_id"`
	Reason       string     `db:"reason"` // WaitAwaitingApproval or WaitQueued
	WaitingSince time.Time  `db:"waiting_since"`
	ExpiresAt    *time.Time `db:"expires_at"` // an approval wait's expiry
	BlockedBy    *uuid.UUID `db:"blocked_by"` // a queued run's blocker, if any
}

// NoteLongWaits records the cluster's long waits not announced yet — plans
// awaiting approval past half their config's approval timeout, and (when
// queuedAfter > 0) deployments queued longer than queuedAfter — enqueues a
// deployment.waiting event for each, and returns them. The database
// dedupes: however many agents sweep, each deployment is announced at most
// once per reason.
func (s *Store) NoteLongWaits(ctx context.Context, clusterID string, queuedAfter time.Duration) ([]LongWait, error) {
	var after *float64
	if queuedAfter > 0 {
		secs := queuedAfter.Seconds()
		after = &secs
	}
	rows, err := s.db().Query(ctx, `SELECT deployment_id, reason, waiting_since, expires_at, blocked_by
FROM grape_note_long_waits($1, make_interval(secs => $2))`, clusterID, after)
	if err != nil {
		return nil, fmt.Errorf("noting long waits of cluster %s: %w", clusterID, err)
	}
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByName[LongWait])
	if err != nil {
		return nil, fmt.Errorf("noting long waits of cluster %s: %w", clusterID, err)
	}
	return ws, nil
}
