package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// NotifyEvents are the events a webhook target can ask for.
var NotifyEvents = []string{
	"deployment.awaiting_approval", "deployment.failed", "deployment.succeeded", "deployment.cancelled",
	"deployment.waiting", "drift.detected", "drift.resolved",
}

// NotifyTarget is a webhook of a cluster. The secret is never read back
// into this struct: it is shown once, when the target is added.
type NotifyTarget struct {
	ID        uuid.UUID `db:"id" json:"id"`
	ClusterID string    `db:"cluster_id" json:"cluster_id"`
	URL       string    `db:"url" json:"url"`
	Format    string    `db:"format" json:"format"`
	Events    []string  `db:"events" json:"events,omitempty"` // nil: every event
	CreatedAt time.Time `db:"created_at" json:"created_at"`
	CreatedBy string    `db:"created_by" json:"created_by"`
}

// ValidateNotifyTarget explains a bad target before the database does.
func ValidateNotifyTarget(t NotifyTarget) error {
	if t.Format != "json" && t.Format != "slack" {
		return fmt.Errorf("format %q: %w: use json or slack", t.Format, ErrInvalid)
	}
	for _, e := range t.Events {
		if !slices.Contains(NotifyEvents, e) {
			return fmt.Errorf("event %q: %w: use one of %v", e, ErrInvalid, NotifyEvents)
		}
	}
	return nil
}

const notifyTargetColumns = `id, cluster_id, url, format, events, created_at, created_by`

// AddNotifyTarget stores a webhook target and returns it with its signing
// secret (256 random bits), which is shown only this once.
func (s *Store) AddNotifyTarget(ctx context.Context, t NotifyTarget) (NotifyTarget, string, error) {
	if err := ValidateNotifyTarget(t); err != nil {
		return NotifyTarget{}, "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	rows, err := s.db().Query(ctx, `INSERT INTO notify_targets (cluster_id, url, format, events, secret, created_by)
VALUES ($1, $2, $3, $4, $5, grape_actor()) RETURNING `+notifyTargetColumns, t.ClusterID, t.URL, t.Format, t.Events, secret)
	if err == nil {
		t, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[NotifyTarget])
	}
	if err != nil {
		switch code, constraint := pgCode(err); {
		case code == codeForeignKeyViolation:
			return NotifyTarget{}, "", fmt.Errorf("adding a webhook to cluster %s: cluster does not exist: %w", t.ClusterID, ErrNotFound)
		case constraint == "notify_targets_url":
			return NotifyTarget{}, "", fmt.Errorf("url %q: %w: use an http(s) URL of at most 2000 characters", t.URL, ErrInvalid)
		}
		return NotifyTarget{}, "", fmt.Errorf("adding a webhook to cluster %s: %w", t.ClusterID, err)
	}
	return t, secret, nil
}

// ListNotifyTargets lists a cluster's webhook targets ("" : every cluster's).
func (s *Store) ListNotifyTargets(ctx context.Context, clusterID string) ([]NotifyTarget, error) {
	rows, err := s.db().Query(ctx, `SELECT `+notifyTargetColumns+` FROM notify_targets
WHERE $1 = '' OR cluster_id = $1 ORDER BY cluster_id, created_at, id`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("listing webhooks: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByName[NotifyTarget])
	if err != nil {
		return nil, fmt.Errorf("listing webhooks: %w", err)
	}
	return ts, nil
}

// RemoveNotifyTarget deletes a target and what it had still to deliver.
func (s *Store) RemoveNotifyTarget(ctx context.Context, id uuid.UUID) error {
	tag, err := s.db().Exec(ctx, `DELETE FROM notify_targets WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("removing webhook %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("removing webhook %s: %w", id, ErrNotFound)
	}
	return nil
}

// Notification is one event to deliver to one target, claimed by an agent.
type Notification struct {
	ID           int64           `db:"id"`
	TargetID     uuid.UUID       `db:"target_id"`
	URL          string          `db:"url"`
	Format       string          `db:"format"`
	Secret       string          `db:"secret"`
	DeploymentID *uuid.UUID      `db:"deployment_id"`
	Event        string          `db:"event"`
	Payload      json.RawMessage `db:"payload"`
	Attempts     int             `db:"attempts"` // including this one
}

// ClaimNotifications takes up to limit due notifications of the cluster for
// lease. Only the oldest undelivered notification of each (target,
// deployment) is ever due, so a deployment's events arrive in order even
// across retries and agents.
func (s *Store) ClaimNotifications(ctx context.Context, clusterID string, limit int, lease time.Duration) ([]Notification, error) {
	rows, err := s.db().Query(ctx, `
WITH heads AS (
    SELECT DISTINCT ON (o.target_id, coalesce(o.deployment_id::text, o.id::text)) o.id
    FROM notify_outbox o
    WHERE o.cluster_id = $1 AND o.delivered_at IS NULL AND o.gave_up_at IS NULL
    ORDER BY o.target_id, coalesce(o.deployment_id::text, o.id::text), o.id
), due AS (
    SELECT o.id FROM notify_outbox o JOIN heads h ON h.id = o.id
    WHERE o.next_attempt_at <= now() AND (o.locked_until IS NULL OR o.locked_until < now())
    ORDER BY o.id LIMIT $2
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE notify_outbox o SET locked_until = now() + $3 * interval '1 second', attempts = o.attempts + 1
FROM due, notify_targets t
WHERE o.id = due.id AND t.id = o.target_id
RETURNING o.id, o.target_id, t.url, t.format, t.secret, o.deployment_id, o.event, o.payload, o.attempts`,
		clusterID, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claiming notifications of cluster %s: %w", clusterID, err)
	}
	ns, err := pgx.CollectRows(rows, pgx.RowToStructByName[Notification])
	if err != nil {
		return nil, fmt.Errorf("claiming notifications of cluster %s: %w", clusterID, err)
	}
	slices.SortFunc(ns, func(a, b Notification) int { return int(a.ID - b.ID) })
	return ns, nil
}

// NotificationDelivered records a delivery the receiver acknowledged.
func (s *Store) NotificationDelivered(ctx context.Context, id int64) error {
	if _, err := s.db().Exec(ctx, `UPDATE notify_outbox SET delivered_at = now(), locked_until = NULL, last_error = NULL WHERE id = $1`, id); err != nil {
		return fmt.Errorf("recording delivery of notification %d: %w", id, err)
	}
	return nil
}

// NotificationFailed records a failed attempt: retry at next, or give up
// (the next event of the deployment is then due).
func (s *Store) NotificationFailed(ctx context.Context, id int64, reason string, next time.Time, giveUp bool) error {
	_, err := s.db().Exec(ctx, `UPDATE notify_outbox SET locked_until = NULL, last_error = left($2, 500), next_attempt_at = $3,
    gave_up_at = CASE WHEN $4 THEN now() END WHERE id = $1`, id, reason, next, giveUp)
	if err != nil {
		return fmt.Errorf("recording failed delivery of notification %d: %w", id, err)
	}
	return nil
}

// NotifyOutboxHead is the cluster's newest outbox id (0: none): a process
// notes it at start, so that it can later wait for the events it produced.
func (s *Store) NotifyOutboxHead(ctx context.Context, clusterID string) (int64, error) {
	var id int64
	if err := s.db().QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM notify_outbox WHERE cluster_id = $1`, clusterID).Scan(&id); err != nil {
		return 0, fmt.Errorf("reading the outbox head of cluster %s: %w", clusterID, err)
	}
	return id, nil
}

// PendingNotifications summarises the cluster's undelivered notifications
// newer than after (not given up yet).
type PendingNotifications struct {
	Count int
	// NextAttempt is the earliest retry among them (zero when none).
	NextAttempt time.Time
	// LastError is the newest failure among them, host only ("" when none failed).
	LastError string
}

// PendingNotificationsAfter counts what is still to deliver of the
// cluster's notifications numbered above after.
func (s *Store) PendingNotificationsAfter(ctx context.Context, clusterID string, after int64) (PendingNotifications, error) {
	var p PendingNotifications
	var next *time.Time
	err := s.db().QueryRow(ctx, `SELECT count(*), min(next_attempt_at),
    coalesce((SELECT last_error FROM notify_outbox WHERE cluster_id = $1 AND id > $2 AND delivered_at IS NULL
        AND gave_up_at IS NULL AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1), '')
FROM notify_outbox WHERE cluster_id = $1 AND id > $2 AND delivered_at IS NULL AND gave_up_at IS NULL`,
		clusterID, after).Scan(&p.Count, &next, &p.LastError)
	if err != nil {
		return p, fmt.Errorf("counting pending notifications of cluster %s: %w", clusterID, err)
	}
	if next != nil {
		p.NextAttempt = *next
	}
	return p, nil
}

// RotateNotifySecret gives the cluster's target a new signing secret and
// returns it (shown only this once). The cut is clean: every delivery
// signed from now on, retries of older events included, uses the new one.
func (s *Store) RotateNotifySecret(ctx context.Context, clusterID string, id uuid.UUID) (string, error) {
	secret := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	tag, err := s.db().Exec(ctx, `UPDATE notify_targets SET secret = $3 WHERE id = $1 AND cluster_id = $2`, id, clusterID, secret)
	if err != nil {
		return "", fmt.Errorf("rotating the secret of webhook %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return "", fmt.Errorf("rotating the secret of webhook %s: no such webhook in cluster %s: %w", id, clusterID, ErrNotFound)
	}
	return secret, nil
}
