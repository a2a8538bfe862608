package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// DriftStatus is the outcome of a drift check.
type DriftStatus string

const (
	DriftInSync  DriftStatus = "in_sync"
	DriftDrifted DriftStatus = "drifted"
	DriftError   DriftStatus = "error"
)

// DriftReport is one drift check's result.
type DriftReport struct {
	ID           uuid.UUID       `db:"id" json:"id"`
	ConfigID     uuid.UUID       `db:"config_id" json:"config_id"`
	ClusterID    string          `db:"cluster_id" json:"cluster_id"`
	DeploymentID *uuid.UUID      `db:"deployment_id" json:"deployment_id,omitempty"`
	CheckedAt    time.Time       `db:"checked_at" json:"checked_at"`
	Status       DriftStatus     `db:"status" json:"status"`
	CommitSHA    *string         `db:"commit_sha" json:"commit_sha,omitempty"`
	DurationMS   *int            `db:"duration_ms" json:"duration_ms,omitempty"`
	Error        *string         `db:"error" json:"error,omitempty"`
	Details      json.RawMessage `db:"details" json:"details"`
}

const driftColumns = `id, config_id, cluster_id, deployment_id, checked_at, status, commit_sha, duration_ms, error, details`

// InsertDriftReport stores a report and returns it as stored.
func (s *Store) InsertDriftReport(ctx context.Context, r DriftReport) (DriftReport, error) {
	if len(r.Details) == 0 {
		r.Details = json.RawMessage(`{}`)
	}
	rows, err := s.db().Query(ctx, `INSERT INTO drift_reports (config_id, cluster_id, deployment_id, status, commit_sha, duration_ms, error, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+driftColumns,
		r.ConfigID, r.ClusterID, r.DeploymentID, r.Status, r.CommitSHA, r.DurationMS, r.Error, r.Details)
	if err != nil {
		return DriftReport{}, fmt.Errorf("storing drift report: %w", err)
	}
	out, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DriftReport])
	if err != nil {
		return DriftReport{}, fmt.Errorf("storing drift report: %w", err)
	}
	return out, nil
}

// GetDriftReport reads one report.
func (s *Store) GetDriftReport(ctx context.Context, id uuid.UUID) (DriftReport, error) {
	rows, err := s.db().Query(ctx, `SELECT `+driftColumns+` FROM drift_reports WHERE id = $1`, id)
	if err != nil {
		return DriftReport{}, fmt.Errorf("reading drift report %s: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DriftReport])
	if err != nil {
		return DriftReport{}, notFound(err, "drift report "+id.String())
	}
	return r, nil
}

// DriftReportOf reads the report a drift check deployment wrote (its
// config narrows the search to that config's reports' index).
func (s *Store) DriftReportOf(ctx context.Context, d Deployment) (DriftReport, error) {
	rows, err := s.db().Query(ctx, `SELECT `+driftColumns+` FROM drift_reports
WHERE config_id = $1 AND deployment_id = $2 ORDER BY checked_at DESC, id DESC LIMIT 1`, d.ConfigID, d.ID)
	if err != nil {
		return DriftReport{}, fmt.Errorf("reading the drift report of deployment %s: %w", d.ID, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DriftReport])
	if err != nil {
		return DriftReport{}, notFound(err, "drift report of deployment "+d.ID.String())
	}
	return r, nil
}

// LatestDriftReports returns the newest report of each config of a cluster
// ("" for all), optionally of one config.
func (s *Store) LatestDriftReports(ctx context.Context, clusterID string, configID *uuid.UUID) ([]DriftReport, error) {
	rows, err := s.db().Query(ctx, `SELECT DISTINCT ON (config_id) `+driftColumns+` FROM drift_reports
WHERE ($1 = '' OR cluster_id = $1) AND ($2::uuid IS NULL OR config_id = $2)
ORDER BY config_id, checked_at DESC, id DESC`, clusterID, configID)
	if err != nil {
		return nil, fmt.Errorf("reading drift reports: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[DriftReport])
}

// DriftCandidate is what the drift scheduler knows of a config.
type DriftCandidate struct {
	Config Config
	// LastDeployment is the config's newest deployment that is not a drift
	// check (nil when it never ran).
	LastDeployment *Deployment
	// LastAppliedCommit is the commit of its newest succeeded apply.
	LastAppliedCommit *string
	// Active is true when a deployment or drift check of it is queued,
	// running or awaiting approval.
	Active bool
	// LastCheck is when a drift check last ran (report time), if ever.
	LastCheck *time.Time
	// LastStatus is the newest report's status.
	LastStatus *DriftStatus
}

// DriftCandidates returns, for every config of the cluster, what the drift
// scheduler needs to decide whether it is idle (one query per pass).
func (s *Store) DriftCandidates(ctx context.Context, clusterID string) ([]DriftCandidate, error) {
	cfgs, err := s.ListConfigs(ctx, clusterID)
	if err != nil {
		return nil, err
	}
	out := make([]DriftCandidate, 0, len(cfgs))
	for _, c := range cfgs {
		dc := DriftCandidate{Config: c}
		rows, err := s.db().Query(ctx, `SELECT `+deploymentColumns+` FROM deployments
WHERE config_id = $1 AND action <> 'drift' ORDER BY created_at DESC, id DESC LIMIT 1`, c.ID)
		if err != nil {
			return nil, fmt.Errorf("reading last deployment of %s: %w", c.Name, err)
		}
		last, err := pgx.CollectRows(rows, pgx.RowToStructByName[Deployment])
		if err != nil {
			return nil, fmt.Errorf("reading last deployment of %s: %w", c.Name, err)
		}
		if len(last) == 1 {
			dc.LastDeployment = &last[0]
		}
		err = s.db().QueryRow(ctx, `SELECT
  (SELECT commit_sha FROM deployments WHERE config_id = $1 AND action = 'apply' AND status = 'succeeded'
     AND commit_sha IS NOT NULL ORDER BY finished_at DESC LIMIT 1),
  EXISTS (SELECT 1 FROM deployments WHERE config_id = $1 AND status IN ('queued', 'in_progress', 'awaiting_approval')),
  (SELECT checked_at FROM drift_reports WHERE config_id = $1 ORDER BY checked_at DESC LIMIT 1),
  (SELECT status FROM drift_reports WHERE config_id = $1 ORDER BY checked_at DESC LIMIT 1)`, c.ID).
			Scan(&dc.LastAppliedCommit, &dc.Active, &dc.LastCheck, &dc.LastStatus)
		if err != nil {
			return nil, fmt.Errorf("reading drift state of %s: %w", c.Name, err)
		}
		out = append(out, dc)
	}
	return out, nil
}

// ErrLocked: another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// WithClusterLock runs f while holding a transaction-scoped advisory lock
// named key, or returns ErrLocked at once if another session holds it. f gets
// a Store bound to the transaction, so its reads and writes commit together.
func (s *Store) WithClusterLock(ctx context.Context, key string, f func(context.Context, *Store) error) error {
	return pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`, key).Scan(&got); err != nil {
			return fmt.Errorf("taking lock %s: %w", key, err)
		}
		if !got {
			return ErrLocked
		}
		return f(ctx, s.in(tx))
	})
}

// CountActive counts a cluster's deployments of an action that are queued or running.
func (s *Store) CountActive(ctx context.Context, clusterID string, action Action) (int, error) {
	var n int
	err := s.db().QueryRow(ctx, `SELECT count(*) FROM deployments WHERE cluster_id = $1 AND action = $2
AND status IN ('queued', 'in_progress', 'awaiting_approval')`, clusterID, action).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting active %s deployments: %w", action, err)
	}
	return n, nil
}

// RemediationFacts is what the database says about re-applying a drift
// report's commit now (see drift.DecideRemediation).
type RemediationFacts struct {
	// NewerReport is a later drift check of the same config, if any.
	NewerReport *uuid.UUID
	// DeployedAfter is a succeeded apply or destroy of the config that
	// finished after the check, if any: what is applied may be newer than
	// the report's commit.
	DeployedAfter *uuid.UUID
}

// RemediationFacts reads the facts about remediating report r.
func (s *Store) RemediationFacts(ctx context.Context, r DriftReport) (RemediationFacts, error) {
	var f RemediationFacts
	err := s.db().QueryRow(ctx, `SELECT
  (SELECT n.id FROM drift_reports n WHERE n.config_id = $1 AND (n.checked_at, n.id) > ($2, $3)
     ORDER BY n.checked_at DESC, n.id DESC LIMIT 1),
  (SELECT d.id FROM deployments d WHERE d.config_id = $1 AND d.action IN ('apply', 'destroy')
     AND d.status = 'succeeded' AND d.finished_at > $2 ORDER BY d.finished_at DESC LIMIT 1)`,
		r.ConfigID, r.CheckedAt, r.ID).Scan(&f.NewerReport, &f.DeployedAfter)
	if err != nil {
		return RemediationFacts{}, fmt.Errorf("checking drift report %s: %w", r.ID, err)
	}
	return f, nil
}
