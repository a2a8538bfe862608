package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrStackIdentity: the change moves an applied stack (its region or its
// state backend), which would create it again and orphan the old one.
var ErrStackIdentity = errors.New("changes where an applied stack lives")

// Config is a cluster's intent for one stack: which golden modules are on and
// with what inputs (Spec, validated by package render before it is stored).
type Config struct {
	ID              uuid.UUID       `db:"id"`
	ClusterID       string          `db:"cluster_id"`
	Name            string          `db:"name"`
	Spec            json.RawMessage `db:"spec"`
	Version         int             `db:"version"`
	RequireApproval bool            `db:"require_approval"`
	AutoRemediate   bool            `db:"auto_remediate"`
	DriftSchedule   *string         `db:"drift_schedule"`
	// PolicySet names the policy set (sets/<name>/ of the agents' policy
	// sources) that judges the config's plans; nil: the common policies only.
	PolicySet *string `db:"policy_set"`
	// ApprovalTimeoutSeconds is how long a deployment of this config may
	// await approval before it expires (default 24 h).
	ApprovalTimeoutSeconds int64     `db:"approval_timeout_s"`
	CreatedAt              time.Time `db:"created_at"`
	UpdatedAt              time.Time `db:"updated_at"`
}

// ApprovalTimeout is ApprovalTimeoutSeconds as a duration.
func (c Config) ApprovalTimeout() time.Duration {
	return time.Duration(c.ApprovalTimeoutSeconds) * time.Second
}

// ConfigVersion is one entry of a config's history.
type ConfigVersion struct {
	ConfigID        uuid.UUID       `db:"config_id"`
	Version         int             `db:"version"`
	Spec            json.RawMessage `db:"spec"`
	RequireApproval bool            `db:"require_approval"`
	AutoRemediate   bool            `db:"auto_remediate"`
	DriftSchedule   *string         `db:"drift_schedule"`
	PolicySet       *string         `db:"policy_set"`
	CreatedAt       time.Time       `db:"created_at"`
}

// ConfigNamePattern repeats the database's rule for config names: they become
// a directory in the audit repository, so no dots, slashes or spaces.
var ConfigNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// ValidateConfigName explains a bad config name.
func ValidateConfigName(name string) error {
	if !ConfigNamePattern.MatchString(name) {
		return fmt.Errorf("config name %q: %w: use 1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit", name, ErrInvalid)
	}
	return nil
}

// ConfigSettings are the per-config switches; nil leaves a stored value as is.
type ConfigSettings struct {
	RequireApproval *bool
	AutoRemediate   *bool
	DriftSchedule   *string // "" clears it (back to the agent default)
	PolicySet       *string // "" clears it (the common policies only)
	// ApprovalTimeout is how long a plan may await approval (>= 1 minute).
	ApprovalTimeout *time.Duration
}

const configColumns = `id, cluster_id, name, spec, version, require_approval, auto_remediate, drift_schedule, policy_set,
    extract(epoch FROM approval_timeout)::bigint AS approval_timeout_s, created_at, updated_at`

// PolicySetPattern repeats the database's rule for policy set names (a
// directory sets/<name>/ in the agents' policy sources).
var PolicySetPattern = ConfigNamePattern

// ValidatePolicySet explains a bad policy set name.
func ValidatePolicySet(name string) error {
	if !PolicySetPattern.MatchString(name) {
		return fmt.Errorf("policy set %q: %w: use 1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit", name, ErrInvalid)
	}
	return nil
}

// UpsertConfig creates or updates the config (cluster, name). The version is
// bumped by the database only when something changed.
func (s *Store) UpsertConfig(ctx context.Context, clusterID, name string, spec json.RawMessage, set ConfigSettings) (Config, error) {
	if err := ValidateConfigName(name); err != nil {
		return Config{}, err
	}
	var schedule, policySet any
	if set.DriftSchedule != nil {
		schedule = *set.DriftSchedule
	}
	if set.PolicySet != nil {
		if *set.PolicySet != "" {
			if err := ValidatePolicySet(*set.PolicySet); err != nil {
				return Config{}, err
			}
		}
		policySet = *set.PolicySet
	}
	var timeout any
	if set.ApprovalTimeout != nil {
		if *set.ApprovalTimeout < time.Minute {
			return Config{}, fmt.Errorf("approval timeout %s: %w: use at least 1m (e.g. 24h)", *set.ApprovalTimeout, ErrInvalid)
		}
		timeout = set.ApprovalTimeout.Seconds()
	}
	rows, err := s.db().Query(ctx, `
INSERT INTO configs (cluster_id, name, spec, require_approval, auto_remediate, drift_schedule, policy_set, approval_timeout)
VALUES ($1, $2, $3, coalesce($4, false), coalesce($5, false), nullif($6::text, ''), nullif($7::text, ''),
    coalesce(make_interval(secs => $8::float8), interval '24 hours'))
ON CONFLICT (cluster_id, name) DO UPDATE SET
    spec = EXCLUDED.spec,
    require_approval = coalesce($4, configs.require_approval),
    auto_remediate = coalesce($5, configs.auto_remediate),
    drift_schedule = CASE WHEN $6::text IS NULL THEN configs.drift_schedule ELSE nullif($6::text, '') END,
    policy_set = CASE WHEN $7::text IS NULL THEN configs.policy_set ELSE nullif($7::text, '') END,
    approval_timeout = coalesce(make_interval(secs => $8::float8), configs.approval_timeout)
RETURNING `+configColumns, clusterID, name, spec, set.RequireApproval, set.AutoRemediate, schedule, policySet, timeout)
	if err != nil {
		return Config{}, s.configWriteError(clusterID, name, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Config])
	if err != nil {
		return Config{}, s.configWriteError(clusterID, name, err)
	}
	return c, nil
}

func (s *Store) configWriteError(clusterID, name string, err error) error {
	code, constraint := pgCode(err)
	if code == codeForeignKeyViolation {
		return fmt.Errorf("storing config %s: cluster %q does not exist: create it with `grape cluster create %s`: %w", name, clusterID, clusterID, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if code == codeCheckViolation && constraint == "configs_stack_identity" && errors.As(err, &pgErr) {
		return fmt.Errorf("storing config %s/%s: %s: %s: %w", clusterID, name, pgErr.Message, pgErr.Hint, ErrStackIdentity)
	}
	if code == codeInsufficientPrivilege {
		// The user_create/user_edit policies (0008): admins edit configs.
		return fmt.Errorf("storing config %s/%s: editing configs of cluster %s needs the admin role (ask an admin of the cluster: grape member add): %w",
			clusterID, name, clusterID, ErrForbidden)
	}
	return fmt.Errorf("storing config %s/%s: %w", clusterID, name, err)
}

// GetConfig finds a config of a cluster by name or by id.
func (s *Store) GetConfig(ctx context.Context, clusterID, nameOrID string) (Config, error) {
	var rows pgx.Rows
	var err error
	if id, perr := uuid.Parse(nameOrID); perr == nil {
		rows, err = s.db().Query(ctx, `SELECT `+configColumns+` FROM configs WHERE id = $1 AND ($2 = '' OR cluster_id = $2)`, id, clusterID)
	} else {
		rows, err = s.db().Query(ctx, `SELECT `+configColumns+` FROM configs WHERE cluster_id = $1 AND name = $2`, clusterID, nameOrID)
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading config %s: %w", nameOrID, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Config])
	if err != nil {
		if clusterID == "" {
			return Config{}, notFound(err, fmt.Sprintf("config %s", nameOrID))
		}
		return Config{}, notFound(err, fmt.Sprintf("config %s in cluster %s", nameOrID, clusterID))
	}
	return c, nil
}

// GetConfigByID reads a config by id alone.
func (s *Store) GetConfigByID(ctx context.Context, id uuid.UUID) (Config, error) {
	return s.GetConfig(ctx, "", id.String())
}

// ListConfigs lists a cluster's configs ("" for all visible ones).
func (s *Store) ListConfigs(ctx context.Context, clusterID string) ([]Config, error) {
	rows, err := s.db().Query(ctx, `SELECT `+configColumns+` FROM configs WHERE $1 = '' OR cluster_id = $1 ORDER BY cluster_id, name`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("listing configs: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[Config])
}

// ConfigHistory returns a config's versions, newest first.
func (s *Store) ConfigHistory(ctx context.Context, configID uuid.UUID) ([]ConfigVersion, error) {
	rows, err := s.db().Query(ctx, `
SELECT config_id, version, spec, require_approval, auto_remediate, drift_schedule, policy_set, created_at
FROM config_versions WHERE config_id = $1 ORDER BY version DESC`, configID)
	if err != nil {
		return nil, fmt.Errorf("reading config history: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[ConfigVersion])
}

// ConfigAtVersion returns the intent as it was at a version.
func (s *Store) ConfigAtVersion(ctx context.Context, configID uuid.UUID, version int) (ConfigVersion, error) {
	rows, err := s.db().Query(ctx, `
SELECT config_id, version, spec, require_approval, auto_remediate, drift_schedule, policy_set, created_at
FROM config_versions WHERE config_id = $1 AND version = $2`, configID, version)
	if err != nil {
		return ConfigVersion{}, fmt.Errorf("reading config %s v%d: %w", configID, version, err)
	}
	v, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ConfigVersion])
	if err != nil {
		return ConfigVersion{}, notFound(err, fmt.Sprintf("config %s v%d", configID, version))
	}
	return v, nil
}
