package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The reads behind the portal's list pages: each page is a fixed number of
// queries, however many clusters, configs and agents there are.

// Now is the database's clock. Heartbeats are stamped with it, so whether an
// agent is online is decided on that clock, whatever the reader's says.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var now time.Time
	if err := s.db().QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("reading database time: %w", err)
	}
	return now, nil
}

// ClusterOverview is a cluster with how many configs it has and its agents.
type ClusterOverview struct {
	Cluster
	Configs int
	// Agents, most recently seen first.
	Agents []Agent
}

// ListClusterOverviews returns every cluster with its config count and its
// agents, in two queries.
func (s *Store) ListClusterOverviews(ctx context.Context) ([]ClusterOverview, error) {
	rows, err := s.db().Query(ctx, `
SELECT c.id, c.description, c.created_at, count(cf.id)::int AS configs
FROM clusters c LEFT JOIN configs cf ON cf.cluster_id = c.id
GROUP BY c.id ORDER BY c.id`)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	type row struct {
		Cluster
		Configs int `db:"configs"`
	}
	clusters, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	rows, err = s.db().Query(ctx, `
SELECT id, cluster_id, hostname, version, started_at, last_heartbeat_at, stopped_at
FROM agents ORDER BY cluster_id, last_heartbeat_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	agents, err := pgx.CollectRows(rows, pgx.RowToStructByName[Agent])
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	byCluster := map[string][]Agent{}
	for _, a := range agents {
		byCluster[a.ClusterID] = append(byCluster[a.ClusterID], a)
	}
	out := make([]ClusterOverview, 0, len(clusters))
	for _, c := range clusters {
		out = append(out, ClusterOverview{Cluster: c.Cluster, Configs: c.Configs, Agents: byCluster[c.ID]})
	}
	return out, nil
}

// NamedDeployment is a deployment with its config's name, as lists show it.
type NamedDeployment struct {
	Deployment
	ConfigName string `db:"config_name"`
}

// deploymentColumnsOf is deploymentColumns qualified with a table alias, for
// queries that join deployments with tables of the same column names.
func deploymentColumnsOf(alias string) string {
	cols := strings.Split(deploymentColumns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

var namedDeploymentColumns = deploymentColumnsOf("d") + ", coalesce(c.name, '') AS config_name"

// ListNamedDeployments is ListDeployments with each deployment's config name,
// joined in the same query.
func (s *Store) ListNamedDeployments(ctx context.Context, f ListFilter) ([]NamedDeployment, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var statuses []string
	for _, st := range f.Statuses {
		statuses = append(statuses, string(st))
	}
	rows, err := s.db().Query(ctx, `SELECT `+namedDeploymentColumns+`
FROM deployments d LEFT JOIN configs c ON c.id = d.config_id
WHERE ($1 = '' OR d.cluster_id = $1) AND ($2::uuid IS NULL OR d.config_id = $2)
  AND (coalesce(cardinality($3::text[]), 0) = 0 OR d.status = ANY($3))
ORDER BY d.created_at DESC, d.id DESC LIMIT $4`, f.ClusterID, f.ConfigID, statuses, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing deployments: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[NamedDeployment])
	if err != nil {
		return nil, fmt.Errorf("listing deployments: %w", err)
	}
	return out, nil
}

// ConfigDrift is a config with its newest drift report (nil: never checked).
type ConfigDrift struct {
	ConfigID   uuid.UUID
	ClusterID  string
	ConfigName string
	Latest     *DriftReport
}

// ListConfigDrift returns the configs of a cluster ("" for all), ordered by
// cluster and name, each with its newest drift report, in one query.
func (s *Store) ListConfigDrift(ctx context.Context, clusterID string) ([]ConfigDrift, error) {
	rows, err := s.db().Query(ctx, `
SELECT c.id, c.cluster_id, c.name,
       r.id, r.deployment_id, r.checked_at, r.status, r.commit_sha, r.duration_ms, r.error, r.details
FROM configs c
LEFT JOIN LATERAL (
    SELECT * FROM drift_reports WHERE config_id = c.id ORDER BY checked_at DESC, id DESC LIMIT 1
) r ON true
WHERE $1 = '' OR c.cluster_id = $1
ORDER BY c.cluster_id, c.name`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("reading drift of configs: %w", err)
	}
	defer rows.Close()
	var out []ConfigDrift
	for rows.Next() {
		var cd ConfigDrift
		var r DriftReport
		var reportID *uuid.UUID
		var checkedAt *time.Time
		var status *DriftStatus
		if err := rows.Scan(&cd.ConfigID, &cd.ClusterID, &cd.ConfigName,
			&reportID, &r.DeploymentID, &checkedAt, &status, &r.CommitSHA, &r.DurationMS, &r.Error, &r.Details); err != nil {
			return nil, fmt.Errorf("reading drift of configs: %w", err)
		}
		if reportID != nil {
			r.ID, r.ConfigID, r.ClusterID, r.CheckedAt, r.Status = *reportID, cd.ConfigID, cd.ClusterID, *checkedAt, *status
			cd.Latest = &r
		}
		out = append(out, cd)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading drift of configs: %w", err)
	}
	return out, nil
}
