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

// What the control plane knows about a config's terraform state: whether
// Grape left infrastructure behind (so an empty state is an accident, not a
// fresh start), which agent holds a local state, and the audit of operator
// actions on state. docs/operations.md, "Where state lives", is the story.

// StateHolder is the agent whose data dir holds a local-state config's state.
type StateHolder struct {
	ConfigID     uuid.UUID  `db:"config_id"`
	ClusterID    string     `db:"cluster_id"`
	AgentID      string     `db:"agent_id"`
	DeploymentID *uuid.UUID `db:"deployment_id"`
	RecordedAt   time.Time  `db:"recorded_at"`
}

// ErrHeldElsewhere: another agent holds the config's local state.
var ErrHeldElsewhere = errors.New("another agent holds this config's state")

// RecordStateHolder records agentID as the holder of the config's local
// state, unless one is recorded already. It returns the holder after the
// call; ErrHeldElsewhere (with that holder) when it is another agent, which
// means this agent must not run terraform on the config.
func (s *Store) RecordStateHolder(ctx context.Context, clusterID string, configID, deploymentID uuid.UUID, agentID string) (StateHolder, error) {
	if _, err := s.db().Exec(ctx, `
INSERT INTO config_state_holders (config_id, cluster_id, agent_id, deployment_id)
VALUES ($1, $2, $3, $4) ON CONFLICT (config_id) DO NOTHING`, configID, clusterID, agentID, deploymentID); err != nil {
		return StateHolder{}, fmt.Errorf("recording the state holder of config %s: %w", configID, err)
	}
	h, err := s.StateHolderOf(ctx, configID)
	if err != nil {
		return StateHolder{}, err
	}
	if h.AgentID != agentID {
		return h, fmt.Errorf("config %s: agent %s holds its state: %w", configID, h.AgentID, ErrHeldElsewhere)
	}
	return h, nil
}

// StateHolderOf returns the holder of a config's local state, or ErrNotFound.
func (s *Store) StateHolderOf(ctx context.Context, configID uuid.UUID) (StateHolder, error) {
	rows, err := s.db().Query(ctx, `
SELECT config_id, cluster_id, agent_id, deployment_id, recorded_at FROM config_state_holders WHERE config_id = $1`, configID)
	if err != nil {
		return StateHolder{}, fmt.Errorf("reading the state holder of config %s: %w", configID, err)
	}
	h, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[StateHolder])
	if err != nil {
		return StateHolder{}, notFound(err, fmt.Sprintf("state holder of config %s", configID))
	}
	return h, nil
}

// ReleaseStateHolder forgets who holds a config's local state (the state was
// moved by hand, or its agent is gone for good), recorded in the audit log.
// The next agent to apply the config becomes its holder.
func (s *Store) ReleaseStateHolder(ctx context.Context, configID uuid.UUID, actor, reason string) (StateHolder, error) {
	var h StateHolder
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM config_state_holders WHERE config_id = $1
RETURNING config_id, cluster_id, agent_id, deployment_id, recorded_at`, configID)
		if err != nil {
			return err
		}
		if h, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[StateHolder]); err != nil {
			return notFound(err, fmt.Sprintf("state holder of config %s", configID))
		}
		return recordAudit(ctx, tx, StateAudit{ClusterID: h.ClusterID, ConfigID: configID, Actor: actor,
			Action: AuditStateHolderRelease, Details: map[string]any{"agent": h.AgentID, "reason": reason}})
	})
	if err != nil {
		return StateHolder{}, fmt.Errorf("releasing the state holder of config %s: %w", configID, err)
	}
	return h, nil
}

// SetStateResources records how many resources the config's state holds
// after this deployment applied (0 after a destroy): the fact the state
// guard later compares a plan's prior state with.
func (s *Store) SetStateResources(ctx context.Context, id uuid.UUID, agentID string, n int) error {
	return s.updateOwned(ctx, id, agentID, "state resources", `state_resources = $3`, n)
}

// Applied is what Grape knows it left in the cloud for a config.
type Applied struct {
	// Applied: the last applying deployment was an apply that left
	// resources, and no destroy succeeded since.
	Applied bool
	// Last is that deployment (nil when the config never applied anything).
	Last *Deployment
	// Version is the config version Last deployed (0 when unknown).
	Version int
}

// AppliedState reads whether Grape applied the config and has not destroyed
// it since, with the deployment that says so. The rule is the database's
// (grape_config_applied), so the identity guard on configs and the agent's
// state guard cannot disagree.
func (s *Store) AppliedState(ctx context.Context, configID uuid.UUID) (Applied, error) {
	var a Applied
	if err := s.db().QueryRow(ctx, `SELECT grape_config_applied($1)`, configID).Scan(&a.Applied); err != nil {
		return Applied{}, fmt.Errorf("reading whether config %s is applied: %w", configID, err)
	}
	rows, err := s.db().Query(ctx, `SELECT `+deploymentColumns+` FROM deployments d
WHERE d.config_id = $1 AND d.status = 'succeeded' AND d.action IN ('apply', 'destroy')
  AND (d.action = 'destroy' OR d.state_resources IS NOT NULL OR coalesce((d.plan_summary ->> 'add')::int, 0) > 0)
ORDER BY d.finished_at DESC, d.id DESC LIMIT 1`, configID)
	if err != nil {
		return Applied{}, fmt.Errorf("reading the last apply of config %s: %w", configID, err)
	}
	d, err := collectDeployment(rows, "last apply")
	switch {
	case errors.Is(err, ErrNotFound):
		return a, nil
	case err != nil:
		return Applied{}, err
	}
	a.Last = &d
	if d.ConfigVersion != nil {
		a.Version = *d.ConfigVersion
	}
	return a, nil
}

// HolderOfflineAfter is how long an agent may go without a heartbeat before
// front ends call it offline (agents beat every few seconds; three leases).
const HolderOfflineAfter = 90 * time.Second

// WaitReason says why a queued deployment is not being claimed when the
// reason is the config's state: a move of it is under way ("waiting for the
// move of this config's state …"), or its holder is offline ("waiting for
// agent X, which holds this config's state; last seen …"). It is "" when
// the deployment is not queued, no move is open and
// its config has no holder, or the holder is online (it is then merely busy
// or the queue is ahead of it).
func (s *Store) WaitReason(ctx context.Context, d Deployment, offlineAfter time.Duration) (string, error) {
	if d.Status != StatusQueued {
		return "", nil
	}
	rows, err := s.db().Query(ctx, `SELECT `+stateMoveColumns+` FROM state_moves WHERE config_id = $1 AND status IN `+openMoveStatuses, d.ConfigID)
	if err != nil {
		return "", fmt.Errorf("reading the state moves of deployment %s: %w", d.ID, err)
	}
	move, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[StateMove])
	switch {
	case err == nil:
		return fmt.Sprintf("waiting for the move of this config's state from agent %s to agent %s to end (move %s, %s; it times out at %s)",
			move.FromAgent, move.ToAgent, move.ID, move.Status, move.ExpiresAt.UTC().Format(time.RFC3339)), nil
	case !errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("reading the state moves of deployment %s: %w", d.ID, err)
	}
	var (
		agentID  string
		lastSeen *time.Time
		stopped  *time.Time
		now      time.Time
	)
	err = s.db().QueryRow(ctx, `
SELECT h.agent_id, a.last_heartbeat_at, a.stopped_at, now()
FROM config_state_holders h LEFT JOIN agents a ON a.id = h.agent_id
WHERE h.config_id = $1`, d.ConfigID).Scan(&agentID, &lastSeen, &stopped, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the state holder of deployment %s: %w", d.ID, err)
	}
	return HolderWaitReason(agentID, lastSeen, stopped, now, offlineAfter), nil
}

// HolderWaitReason is the sentence front ends show for a queued deployment
// whose config's state holder is offline, or "" when the holder is online.
// Pure, so every front end says the same.
func HolderWaitReason(agentID string, lastSeen, stopped *time.Time, now time.Time, offlineAfter time.Duration) string {
	switch {
	case lastSeen == nil:
		return fmt.Sprintf("waiting for agent %s, which holds this config's state; it has never registered with this control plane", agentID)
	case stopped != nil && !stopped.Before(*lastSeen):
		return fmt.Sprintf("waiting for agent %s, which holds this config's state; last seen %s (%s ago, stopped)", agentID, lastSeen.UTC().Format(time.RFC3339), now.Sub(*lastSeen).Round(time.Second))
	case now.Sub(*lastSeen) > offlineAfter:
		return fmt.Sprintf("waiting for agent %s, which holds this config's state; last seen %s (%s ago)", agentID, lastSeen.UTC().Format(time.RFC3339), now.Sub(*lastSeen).Round(time.Second))
	}
	return ""
}

// LocalStateRisk is what `grape agent` warns about at start: other agents of
// the cluster online while configs keep their state on an agent's disk.
type LocalStateRisk struct {
	OtherAgents  []string // online agents of the cluster other than this one
	LocalConfigs []string // configs of the cluster using the local backend
}

// LocalStateRiskOf reads the agents of the cluster other than self seen within
// onlineWithin, and the cluster's configs whose intent uses the local backend.
func (s *Store) LocalStateRiskOf(ctx context.Context, clusterID, self string, onlineWithin time.Duration) (LocalStateRisk, error) {
	var r LocalStateRisk
	err := s.db().QueryRow(ctx, `
SELECT
  coalesce((SELECT array_agg(a.id ORDER BY a.id) FROM agents a
            WHERE a.cluster_id = $1 AND a.id <> $2 AND a.stopped_at IS NULL
              AND a.last_heartbeat_at > now() - make_interval(secs => $3)), '{}'),
  coalesce((SELECT array_agg(c.name ORDER BY c.name) FROM configs c
            WHERE c.cluster_id = $1 AND coalesce(c.spec -> 'backend' ->> 'type', 'local') = 'local'), '{}')`,
		clusterID, self, onlineWithin.Seconds()).Scan(&r.OtherAgents, &r.LocalConfigs)
	if err != nil {
		return LocalStateRisk{}, fmt.Errorf("reading the agents and local-state configs of cluster %s: %w", clusterID, err)
	}
	return r, nil
}

// AuditAction names an operator action on state, recorded in 0008's
// audit_events (through grape_audit) with the config's id as target_id.
type AuditAction string

const (
	AuditConfigRename       AuditAction = "config.renamed" // written by the database's rename trigger
	AuditStateRestore       AuditAction = "state.restored"
	AuditStateHolderRelease AuditAction = "state.holder_released"
	AuditStackReplace       AuditAction = "stack.replaced"
	AuditStateBackendMove   AuditAction = "state.backend_moved"
)

// StateAudit is an operator action on a config's state to record.
type StateAudit struct {
	ClusterID string
	ConfigID  uuid.UUID
	// Actor is who asked; the database prefers a signed-in user or an
	// agent role when the session is one (grape_actor).
	Actor   string
	Action  AuditAction
	Details map[string]any
}

func recordAudit(ctx context.Context, q execer, e StateAudit) error {
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	if _, err := q.Exec(ctx, `SELECT grape_audit(grape_actor($1), $2, $3, $4, $5)`,
		e.Actor, string(e.Action), e.ClusterID, e.ConfigID.String(), details); err != nil {
		return fmt.Errorf("recording %s in the audit trail: %w", e.Action, err)
	}
	return nil
}

// RecordStateAudit writes an operator action on state into the audit trail.
func (s *Store) RecordStateAudit(ctx context.Context, e StateAudit) error {
	return recordAudit(ctx, s.db(), e)
}

// RenameConfig renames a config. Nothing moves in the cloud: state, the
// audit repository path and locks are keyed by the config's id. The database
// records the rename in the audit log with actor (for any writer; this only
// names the actor).
func (s *Store) RenameConfig(ctx context.Context, clusterID string, configID uuid.UUID, newName, actor string) (Config, error) {
	if err := ValidateConfigName(newName); err != nil {
		return Config{}, err
	}
	var c Config
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('grape.actor', $1, true)`, actor); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE configs SET name = $3 WHERE id = $1 AND cluster_id = $2 RETURNING `+configColumns,
			configID, clusterID, newName)
		if err != nil {
			return err
		}
		if c, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Config]); err != nil {
			return notFound(err, fmt.Sprintf("config %s in cluster %s", configID, clusterID))
		}
		return nil
	})
	if err != nil {
		if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "configs_name_unique" {
			return Config{}, fmt.Errorf("renaming config %s: cluster %s already has a config named %q: %w", configID, clusterID, newName, ErrInvalid)
		}
		return Config{}, fmt.Errorf("renaming config %s: %w", configID, err)
	}
	return c, nil
}

// ReplaceStack changes an applied config's region or backend the only safe
// way: in one transaction it queues the destroy of the version that is
// applied now, stores the new intent (the identity guard lets it through
// because that destroy is queued), and queues the apply of the new version
// behind it. Each deployment renders the version it was queued against, so
// the destroy plans the old stack and the apply the new one, as two
// reviewable runs, both approval-gated whatever the config's setting: a
// person sees the whole destroy and the whole create before either happens.
// If the destroy fails, the agent refuses the apply: the old stack still
// exists.
func (s *Store) ReplaceStack(ctx context.Context, clusterID, name string, spec json.RawMessage, set ConfigSettings, actor string) (cfg Config, destroy, apply Deployment, err error) {
	err = pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		inner := s.in(tx)
		old, err := inner.GetConfig(ctx, clusterID, name)
		if err != nil {
			return err
		}
		if destroy, err = inner.Enqueue(ctx, EnqueueParams{ClusterID: clusterID, ConfigID: old.ID, Action: ActionDestroy, RequestedBy: actor, RequireApproval: true}); err != nil {
			return err
		}
		if cfg, err = inner.UpsertConfig(ctx, clusterID, name, spec, set); err != nil {
			return err
		}
		if apply, err = inner.Enqueue(ctx, EnqueueParams{ClusterID: clusterID, ConfigID: old.ID, Action: ActionApply, RequestedBy: actor, RequireApproval: true}); err != nil {
			return err
		}
		// Both rows got the transaction's now(); the queue orders by
		// (created_at, id), so the apply is placed explicitly behind.
		if err := tx.QueryRow(ctx, `UPDATE deployments SET created_at = $2::timestamptz + interval '1 microsecond' WHERE id = $1 RETURNING created_at`,
			apply.ID, destroy.CreatedAt).Scan(&apply.CreatedAt); err != nil {
			return err
		}
		return recordAudit(ctx, tx, StateAudit{ClusterID: clusterID, ConfigID: old.ID, Actor: actor, Action: AuditStackReplace,
			Details: map[string]any{"from_version": old.Version, "to_version": cfg.Version, "destroy": destroy.ID, "apply": apply.ID}})
	})
	if err != nil {
		return Config{}, Deployment{}, Deployment{}, fmt.Errorf("replacing the stack of config %s/%s: %w", clusterID, name, err)
	}
	return cfg, destroy, apply, nil
}

// MoveStateBackend stores an intent whose state backend differs from the one
// the applied config uses, after a person copied the state there (the
// database's identity guard allows it inside this transaction only, and only
// when the region stays). The state holder is forgotten: a state in S3 is
// any agent's to use, and a local one is pinned again by its next apply. If
// the state is not where the new backend looks, the next plan sees an empty
// state and the agent refuses it (state_missing).
func (s *Store) MoveStateBackend(ctx context.Context, clusterID, name string, spec json.RawMessage, set ConfigSettings, actor string) (Config, error) {
	var cfg Config
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		inner := s.in(tx)
		old, err := inner.GetConfig(ctx, clusterID, name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('grape.state_moved', 'on', true)`); err != nil {
			return err
		}
		if cfg, err = inner.UpsertConfig(ctx, clusterID, name, spec, set); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM config_state_holders WHERE config_id = $1`, old.ID); err != nil {
			return err
		}
		from, to := backendOf(old.Spec), backendOf(cfg.Spec)
		return recordAudit(ctx, tx, StateAudit{ClusterID: clusterID, ConfigID: old.ID, Actor: actor, Action: AuditStateBackendMove,
			Details: map[string]any{"from_version": old.Version, "to_version": cfg.Version, "from": from, "to": to}})
	})
	if err != nil {
		return Config{}, fmt.Errorf("moving the state backend of config %s/%s: %w", clusterID, name, err)
	}
	return cfg, nil
}

// AuditStateBackendMigration: `grape config apply --migrate-backend` stored
// the new backend and queued the migrating deployment; the database records
// state.backend_migrated when the agent has migrated it.
const AuditStateBackendMigration AuditAction = "state.backend_migration_queued"

// MigrateStateBackend stores an intent whose state backend differs from the
// one the applied config uses, and queues, in the same transaction, the
// deployment on which the agent holding the state migrates it with
// terraform's own `init -migrate-state -force-copy` before planning. The
// database's identity guard lets the backend change through inside this
// transaction only, and only when the region stays. The holder stays until
// the migration ran, so the claim gives that deployment to the agent with
// the state.
func (s *Store) MigrateStateBackend(ctx context.Context, clusterID, name string, spec json.RawMessage, set ConfigSettings, actor string, requireApproval bool) (Config, Deployment, error) {
	var (
		cfg Config
		d   Deployment
	)
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		inner := &Store{pool: s.pool, q: tx}
		old, err := inner.GetConfig(ctx, clusterID, name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('grape.migrate_backend', 'on', true)`); err != nil {
			return err
		}
		if cfg, err = inner.UpsertConfig(ctx, clusterID, name, spec, set); err != nil {
			return err
		}
		if d, err = inner.Enqueue(ctx, EnqueueParams{ClusterID: clusterID, ConfigID: old.ID, Action: ActionApply,
			RequestedBy: actor, MigrateState: true, RequireApproval: requireApproval}); err != nil {
			return err
		}
		from, to := backendOf(old.Spec), backendOf(cfg.Spec)
		return recordAudit(ctx, tx, StateAudit{ClusterID: clusterID, ConfigID: old.ID, Actor: actor, Action: AuditStateBackendMigration,
			Details: map[string]any{"from_version": old.Version, "to_version": cfg.Version, "from": from, "to": to, "deployment": d.ID}})
	})
	if err != nil {
		return Config{}, Deployment{}, fmt.Errorf("migrating the state backend of config %s/%s: %w", clusterID, name, err)
	}
	return cfg, d, nil
}

// StateMigrated records that the agent migrated the config's local state to
// a shared backend on deployment id: it no longer holds it (audited as
// state.backend_migrated; to says where the state is now).
func (s *Store) StateMigrated(ctx context.Context, id uuid.UUID, agentID, to string) error {
	if _, err := s.db().Exec(ctx, `SELECT grape_state_migrated($1, $2, $3)`, id, agentID, to); err != nil {
		return fmt.Errorf("recording the state migration of deployment %s: %w", id, err)
	}
	return nil
}

// backendOf is an intent's backend block as the audit trail records it (nil
// for the default local backend).
func backendOf(spec json.RawMessage) any {
	var in struct {
		Backend any `json:"backend"`
	}
	_ = json.Unmarshal(spec, &in)
	return in.Backend
}
