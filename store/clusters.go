package store

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a target environment served by one or more agents.
type Cluster struct {
	ID          string    `db:"id"`
	Description string    `db:"description"`
	CreatedAt   time.Time `db:"created_at"`
}

// Agent is what an agent last said about itself.
type Agent struct {
	ID              string     `db:"id"`
	ClusterID       string     `db:"cluster_id"`
	Hostname        string     `db:"hostname"`
	Version         string     `db:"version"`
	StartedAt       time.Time  `db:"started_at"`
	LastHeartbeatAt time.Time  `db:"last_heartbeat_at"`
	StoppedAt       *time.Time `db:"stopped_at"`
}

// ClusterIDPattern is the database's rule for cluster ids, repeated so the CLI
// can say what is wrong before asking the server.
var ClusterIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// ValidateClusterID explains a bad cluster id.
func ValidateClusterID(id string) error {
	if !ClusterIDPattern.MatchString(id) {
		return fmt.Errorf("cluster id %q: %w: use 1-40 lowercase letters, digits and hyphens, starting and ending with a letter or digit", id, ErrInvalid)
	}
	return nil
}

// CreateCluster creates a cluster; it is not an error if it exists.
func (s *Store) CreateCluster(ctx context.Context, id, description string) (Cluster, error) {
	if err := ValidateClusterID(id); err != nil {
		return Cluster{}, err
	}
	rows, err := s.db().Query(ctx, `
INSERT INTO clusters (id, description) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET description = CASE WHEN $2 = '' THEN clusters.description ELSE $2 END
RETURNING id, description, created_at`, id, description)
	if err != nil {
		return Cluster{}, fmt.Errorf("creating cluster %s: %w", id, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Cluster])
	if err != nil {
		return Cluster{}, fmt.Errorf("creating cluster %s: %w", id, err)
	}
	return c, nil
}

// GetCluster returns one cluster or ErrNotFound.
func (s *Store) GetCluster(ctx context.Context, id string) (Cluster, error) {
	rows, err := s.db().Query(ctx, `SELECT id, description, created_at FROM clusters WHERE id = $1`, id)
	if err != nil {
		return Cluster{}, fmt.Errorf("reading cluster %s: %w", id, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Cluster])
	if err != nil {
		return Cluster{}, notFound(err, "cluster "+id)
	}
	return c, nil
}

// ListClusters returns all clusters visible to the connection's role.
func (s *Store) ListClusters(ctx context.Context) ([]Cluster, error) {
	rows, err := s.db().Query(ctx, `SELECT id, description, created_at FROM clusters ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[Cluster])
}

// RegisterAgent records (or refreshes) an agent serving a cluster.
func (s *Store) RegisterAgent(ctx context.Context, a Agent) error {
	_, err := s.db().Exec(ctx, `
INSERT INTO agents (id, cluster_id, hostname, version, started_at, last_heartbeat_at, stopped_at)
VALUES ($1, $2, $3, $4, now(), now(), NULL)
ON CONFLICT (id) DO UPDATE SET cluster_id = EXCLUDED.cluster_id, hostname = EXCLUDED.hostname,
    version = EXCLUDED.version, started_at = now(), last_heartbeat_at = now(), stopped_at = NULL`,
		a.ID, a.ClusterID, a.Hostname, a.Version)
	if err != nil {
		switch code, _ := pgCode(err); code {
		case codeForeignKeyViolation:
			return fmt.Errorf("registering agent %s: cluster %q does not exist: create it with `grape cluster create %s`: %w", a.ID, a.ClusterID, a.ClusterID, ErrNotFound)
		case codeInsufficientPrivilege:
			return fmt.Errorf("registering agent %s: this database role may not register an agent for cluster %q (an agent id is registered in another cluster, or the role belongs to another cluster): pass another --agent-id or connect as grape_agent_<cluster>: %w", a.ID, a.ClusterID, err)
		}
		return fmt.Errorf("registering agent %s: %w", a.ID, err)
	}
	return nil
}

// AgentHeartbeat marks the agent alive.
func (s *Store) AgentHeartbeat(ctx context.Context, agentID string) error {
	_, err := s.db().Exec(ctx, `UPDATE agents SET last_heartbeat_at = now() WHERE id = $1`, agentID)
	if err != nil {
		return fmt.Errorf("agent heartbeat: %w", err)
	}
	return nil
}

// AgentStopped marks a clean shutdown.
func (s *Store) AgentStopped(ctx context.Context, agentID string) error {
	_, err := s.db().Exec(ctx, `UPDATE agents SET stopped_at = now() WHERE id = $1`, agentID)
	if err != nil {
		return fmt.Errorf("recording agent stop: %w", err)
	}
	return nil
}

// ListAgents returns a cluster's agents, most recently seen first.
func (s *Store) ListAgents(ctx context.Context, clusterID string) ([]Agent, error) {
	rows, err := s.db().Query(ctx, `
SELECT id, cluster_id, hostname, version, started_at, last_heartbeat_at, stopped_at
FROM agents WHERE cluster_id = $1 ORDER BY last_heartbeat_at DESC`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[Agent])
}
