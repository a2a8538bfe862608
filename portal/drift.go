package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/grapehq/grape/store"
)

// The drift queries live here until the drift feature gives package store
// its own drift-report API; they only read drift_reports.

// DriftReport is one row of drift_reports, with its config's name.
type DriftReport struct {
	ID           uuid.UUID       `db:"id"`
	ConfigID     uuid.UUID       `db:"config_id"`
	ClusterID    string          `db:"cluster_id"`
	ConfigName   string          `db:"config_name"`
	DeploymentID *uuid.UUID      `db:"deployment_id"`
	CheckedAt    time.Time       `db:"checked_at"`
	Status       string          `db:"status"`
	CommitSHA    *string         `db:"commit_sha"`
	DurationMS   *int            `db:"duration_ms"`
	Error        *string         `db:"error"`
	Details      json.RawMessage `db:"details"`
}

// DriftDetails is the details column: what a re-plan would change.
type DriftDetails struct {
	Resources []DriftResource `json:"resources"`
}

// DriftResource is one resource that drifted.
type DriftResource struct {
	Address    string   `json:"address"`
	Action     string   `json:"action"`
	Attributes []string `json:"attributes"`
}

// Resources decodes the report's details; a malformed column yields none
// (the page still shows the status).
func (d DriftReport) Resources() []DriftResource {
	var det DriftDetails
	if len(d.Details) > 0 {
		_ = json.Unmarshal(d.Details, &det)
	}
	return det.Resources
}

// Remediable says whether the remediate button applies: drift found, and a
// commit to re-apply.
func (d DriftReport) Remediable() bool {
	return d.Status == "drifted" && d.CommitSHA != nil && isSHA(*d.CommitSHA)
}

// ConfigDrift is a config with its latest drift report (nil: never checked).
type ConfigDrift struct {
	ConfigID   uuid.UUID
	ClusterID  string
	ConfigName string
	Latest     *DriftReport
}

const driftReportColumns = `r.id, r.config_id, r.cluster_id, c.name AS config_name, r.deployment_id, r.checked_at,
    r.status, r.commit_sha, r.duration_ms, r.error, r.details`

// latestDriftQuery lists configs (of one cluster, or all for ”) with their
// newest report; LATERAL uses the (config_id, checked_at DESC) index once
// per config.
const latestDriftQuery = `
SELECT c.id, c.cluster_id, c.name, ` + driftReportColumns + `
FROM configs c
LEFT JOIN LATERAL (
    SELECT * FROM drift_reports d WHERE d.config_id = c.id ORDER BY d.checked_at DESC, d.id DESC LIMIT 1
) r ON true
WHERE $1 = '' OR c.cluster_id = $1
ORDER BY c.cluster_id, c.name`

func (s *Server) latestDrift(ctx context.Context, clusterID string) ([]ConfigDrift, error) {
	rows, err := s.st.Pool().Query(ctx, latestDriftQuery, clusterID)
	if err != nil {
		return nil, fmt.Errorf("reading drift reports: %w", err)
	}
	defer rows.Close()
	var out []ConfigDrift
	for rows.Next() {
		var cd ConfigDrift
		var r DriftReport
		var id *uuid.UUID
		var cluster, name, status *string
		var checked *time.Time
		if err := rows.Scan(&cd.ConfigID, &cd.ClusterID, &cd.ConfigName,
			&id, new(*uuid.UUID), &cluster, &name, &r.DeploymentID, &checked, &status, &r.CommitSHA, &r.DurationMS, &r.Error, &r.Details); err != nil {
			return nil, fmt.Errorf("reading drift reports: %w", err)
		}
		if id != nil {
			r.ID, r.ConfigID, r.ClusterID, r.ConfigName = *id, cd.ConfigID, cd.ClusterID, cd.ConfigName
			r.CheckedAt, r.Status = *checked, *status
			cd.Latest = &r
		}
		out = append(out, cd)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading drift reports: %w", err)
	}
	return out, nil
}

// latestDriftFor is the newest report of one config, or nil.
func (s *Server) latestDriftFor(ctx context.Context, configID uuid.UUID) (*DriftReport, error) {
	rows, err := s.st.Pool().Query(ctx, `SELECT `+driftReportColumns+`
FROM drift_reports r JOIN configs c ON c.id = r.config_id
WHERE r.config_id = $1 ORDER BY r.checked_at DESC, r.id DESC LIMIT 1`, configID)
	if err != nil {
		return nil, fmt.Errorf("reading drift report: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DriftReport])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading drift report: %w", err)
	}
	return &r, nil
}

func (s *Server) driftReport(ctx context.Context, id uuid.UUID) (DriftReport, error) {
	rows, err := s.st.Pool().Query(ctx, `SELECT `+driftReportColumns+`
FROM drift_reports r JOIN configs c ON c.id = r.config_id WHERE r.id = $1`, id)
	if err != nil {
		return DriftReport{}, fmt.Errorf("reading drift report %s: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DriftReport])
	if errors.Is(err, pgx.ErrNoRows) {
		return DriftReport{}, fmt.Errorf("drift report %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return DriftReport{}, fmt.Errorf("reading drift report %s: %w", id, err)
	}
	return r, nil
}

// remediationBlocker explains why re-applying a report's commit would be
// wrong now, or returns "": a newer report supersedes it, or the config was
// deployed after the check (the report's commit may be older than what is
// applied, and applying it would roll that deployment back).
const remediationBlockerQuery = `
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM drift_reports n WHERE n.config_id = $1 AND (n.checked_at, n.id) > ($2, $3))
        THEN 'a newer drift check of this config exists: remediate from its report'
    WHEN EXISTS (SELECT 1 FROM deployments d WHERE d.config_id = $1 AND d.action IN ('apply', 'destroy')
                 AND d.status = 'succeeded' AND d.finished_at > $2)
        THEN 'the config was deployed after this drift check: run a new drift check first'
    ELSE '' END`

func (s *Server) remediationBlocker(ctx context.Context, r DriftReport) (string, error) {
	var why string
	if err := s.st.Pool().QueryRow(ctx, remediationBlockerQuery, r.ConfigID, r.CheckedAt, r.ID).Scan(&why); err != nil {
		return "", fmt.Errorf("checking drift report %s: %w", r.ID, err)
	}
	return why, nil
}
