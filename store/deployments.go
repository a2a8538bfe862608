package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/grapehq/grape/internal/errkind"
)

// Status of a deployment. The database's CHECK constraint holds the same list.
type Status string

const (
	StatusQueued           Status = "queued"
	StatusInProgress       Status = "in_progress"
	StatusAwaitingApproval Status = "awaiting_approval"
	StatusSucceeded        Status = "succeeded"
	StatusFailed           Status = "failed"
	StatusCancelled        Status = "cancelled"
)

// Final reports whether the status is an end state.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Action is what a deployment does.
type Action string

const (
	ActionPlan    Action = "plan"
	ActionApply   Action = "apply"
	ActionDestroy Action = "destroy"
	// ActionDrift re-plans the last applied commit and reports drift; never applies.
	ActionDrift Action = "drift"
)

// ParseAction checks a user-supplied action.
func ParseAction(s string) (Action, error) {
	switch a := Action(s); a {
	case ActionPlan, ActionApply, ActionDestroy:
		return a, nil
	case "":
		return ActionApply, nil
	}
	return "", fmt.Errorf("action %q: %w: use plan, apply or destroy", s, ErrInvalid)
}

// Phase is how far a run got; recorded as each phase starts.
type Phase string

const (
	PhaseClaimed  Phase = "claimed"
	PhaseRender   Phase = "render"
	PhaseCommit   Phase = "commit"
	PhaseCheckout Phase = "checkout"
	PhaseInit     Phase = "init"
	PhasePlan     Phase = "plan"
	PhaseCost     Phase = "cost"
	PhaseApproval Phase = "approval"
	PhaseApply    Phase = "apply"
	PhaseOutputs  Phase = "outputs"
	PhaseDone     Phase = "done"
)

// ErrorKind classifies a failure for the person reading it: the values of
// the error_kind column, defined once in package errkind (runner's errors
// carry them too, so nothing maps one to the other).
type ErrorKind = errkind.Kind

// The error kinds, by their store names.
const (
	KindBadConfig          = errkind.BadConfig
	KindGit                = errkind.Git
	KindInit               = errkind.Init
	KindPlan               = errkind.Plan
	KindPolicy             = errkind.Policy
	KindApply              = errkind.Apply
	KindStateLock          = errkind.StateLock
	KindStateMissing       = errkind.StateMissing
	KindControlPlaneBehind = errkind.ControlPlaneBehind
	KindAgentLost          = errkind.AgentLost
	KindCancelled          = errkind.Cancelled
	KindTimeout            = errkind.Timeout
	KindRejected           = errkind.Rejected
	KindApprovalRefused    = errkind.ApprovalRefused
	KindInternal           = errkind.Internal
)

// Deployment is one row of the queue.
type Deployment struct {
	ID              uuid.UUID  `db:"id"`
	ConfigID        uuid.UUID  `db:"config_id"`
	ClusterID       string     `db:"cluster_id"`
	Status          Status     `db:"status"`
	Action          Action     `db:"action"`
	Phase           *Phase     `db:"phase"`
	ConfigVersion   *int       `db:"config_version"`
	SourceCommit    *string    `db:"source_commit"`
	RequireApproval bool       `db:"require_approval"`
	ApprovedAt      *time.Time `db:"approved_at"`
	ApprovedBy      *string    `db:"approved_by"`
	// ReviewComment is what the person who approved or rejected the plan
	// said about it (optional; written with the decision, never changed).
	ReviewComment     *string         `db:"review_comment"`
	RejectedAt        *time.Time      `db:"rejected_at"`
	RejectedBy        *string         `db:"rejected_by"`
	CancelRequestedAt *time.Time      `db:"cancel_requested_at"`
	CancelRequestedBy *string         `db:"cancel_requested_by"`
	RequestedBy       string          `db:"requested_by"`
	ClaimedBy         *string         `db:"claimed_by"`
	ClaimedAt         *time.Time      `db:"claimed_at"`
	LeaseExpiresAt    *time.Time      `db:"lease_expires_at"`
	HeartbeatAt       *time.Time      `db:"heartbeat_at"`
	StartedAt         *time.Time      `db:"started_at"`
	FinishedAt        *time.Time      `db:"finished_at"`
	CommitSHA         *string         `db:"commit_sha"`
	Error             *string         `db:"error"`
	ErrorKind         *ErrorKind      `db:"error_kind"`
	Attempt           int             `db:"attempt"`
	MaxAttempts       int             `db:"max_attempts"`
	PlanSummary       json.RawMessage `db:"plan_summary"`
	// PlanDiff is the plan's attribute-level diff (plandiff.Diff), without
	// sensitive values. NULL until planned.
	PlanDiff json.RawMessage `db:"plan_diff"`
	Outputs  json.RawMessage `db:"outputs"`
	Cost     json.RawMessage `db:"cost"`
	// Policy holds the policies' verdicts on the plan (policy.Result):
	// digest, verdicts and messages, never plan values.
	Policy json.RawMessage `db:"policy"`
	// Engine and EngineVersion name the IaC engine that ran it ("terraform"
	// or "opentofu") and its version.
	Engine        *string `db:"engine"`
	EngineVersion *string `db:"engine_version"`
	// LogsPrunedAt is when grape prune deleted its log lines.
	LogsPrunedAt *time.Time `db:"logs_pruned_at"`
	// AwaitingApprovalAt is when the plan was parked for a person.
	AwaitingApprovalAt *time.Time `db:"awaiting_approval_at"`
	// AcceptEmptyState: a person (RequestedBy) accepted that this run plans
	// from an empty state although Grape applied resources for the config.
	AcceptEmptyState bool `db:"accept_empty_state"`
	// AcceptRollback: a person (RequestedBy) accepted that this run deploys
	// a version older than the audit repository's newest commit of the config.
	AcceptRollback bool `db:"accept_rollback"`
	// MigrateState: this run migrates the config's state to the intent's
	// new backend first (grape config apply --migrate-backend).
	MigrateState bool `db:"migrate_state"`
	// StateResources is how many resources the config's state held after
	// this deployment applied (0 after a destroy); nil when nothing applied.
	StateResources *int      `db:"state_resources"`
	CreatedAt      time.Time `db:"created_at"`
	UpdatedAt      time.Time `db:"updated_at"`
}

// PhaseName returns the phase or "" when none was recorded.
func (d Deployment) PhaseName() Phase {
	if d.Phase == nil {
		return ""
	}
	return *d.Phase
}

const deploymentColumns = `id, config_id, cluster_id, status, action, phase, config_version, source_commit,
    require_approval, approved_at, approved_by, rejected_at, rejected_by, review_comment, cancel_requested_at, cancel_requested_by,
    requested_by, claimed_by, claimed_at, lease_expires_at, heartbeat_at, started_at, finished_at,
    commit_sha, error, error_kind, attempt, max_attempts, plan_summary, plan_diff, outputs, cost, policy,
    engine, engine_version, logs_pruned_at, awaiting_approval_at, accept_empty_state, accept_rollback, migrate_state, state_resources,
    created_at, updated_at`

func collectDeployment(rows pgx.Rows, what string) (Deployment, error) {
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deployment])
	if err != nil {
		return Deployment{}, notFound(err, what)
	}
	return d, nil
}

// EnqueueParams describe a deployment to queue.
type EnqueueParams struct {
	ClusterID       string
	ConfigID        uuid.UUID
	Action          Action
	RequireApproval bool    // in addition to the config's own setting
	SourceCommit    *string // run this commit instead of rendering the current intent
	RequestedBy     string
	MaxAttempts     int // 0: the default (3)
	// AcceptEmptyState and AcceptRollback are one-off overrides of the state
	// guards (docs/operations.md, "Where state lives"), recorded on the row.
	AcceptEmptyState bool
	AcceptRollback   bool
	// MigrateState: migrate the state to the intent's backend first.
	MigrateState bool
}

// Enqueue inserts a queued deployment; the database fills the config version
// and notifies the cluster's agents.
func (s *Store) Enqueue(ctx context.Context, p EnqueueParams) (Deployment, error) {
	if p.Action == "" {
		p.Action = ActionApply
	}
	maxAttempts := p.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = 3
	}
	args := []any{p.ConfigID, p.ClusterID, p.Action, p.RequireApproval, p.SourceCommit, p.RequestedBy, maxAttempts}
	insert := enqueueQuery
	switch {
	case s.asUser && (p.SourceCommit != nil || p.Action == ActionDrift):
		// A signed-in user may not name a source_commit in an INSERT:
		// grape_queue_at_commit checks the operator role and that the commit
		// is the config's last applied one (migration portal_users).
		insert, args = enqueueAtCommitQuery, []any{p.ConfigID, p.Action, p.SourceCommit, p.RequireApproval, maxAttempts, p.RequestedBy}
	case p.AcceptEmptyState || p.AcceptRollback || p.MigrateState:
		// Only people set overrides; agent roles hold no grant on these
		// columns, so the common statement does not name them.
		insert, args = enqueueOverrideQuery, append(args, p.AcceptEmptyState, p.AcceptRollback, p.MigrateState)
	}
	rows, err := s.db().Query(ctx, insert, args...)
	if err != nil {
		return Deployment{}, enqueueError(p, err)
	}
	d, err := collectDeployment(rows, "queued deployment")
	if err != nil {
		return Deployment{}, enqueueError(p, err)
	}
	return d, nil
}

const enqueueQuery = `
INSERT INTO deployments (config_id, cluster_id, action, require_approval, source_commit, requested_by, max_attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING ` + deploymentColumns

const enqueueOverrideQuery = `
INSERT INTO deployments (config_id, cluster_id, action, require_approval, source_commit, requested_by, max_attempts,
    accept_empty_state, accept_rollback, migrate_state)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING ` + deploymentColumns

// enqueueAtCommitQuery queues a run of a given commit (a remediation, its
// retry, a drift check) for a signed-in user.
const enqueueAtCommitQuery = `SELECT ` + deploymentColumns + ` FROM grape_queue_at_commit($1, $2, $3, $4, $5, $6)`

func enqueueError(p EnqueueParams, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.ConstraintName == "grape_queue_at_commit":
			return fmt.Errorf("queueing deployment: %s: %w", pgErr.Message, ErrWrongState)
		case pgErr.Code == "P0002": // no_data_found: a config the user cannot see
			return fmt.Errorf("queueing deployment: config %s: %w", p.ConfigID, ErrNotFound)
		case pgErr.Code == codeInsufficientPrivilege && strings.Contains(pgErr.Message, "row-level security"):
			// The user_queue policy: say which rule, not which table.
			return fmt.Errorf("queueing deployment: queueing on cluster %s needs the operator, approver or admin role (ask an admin of the cluster: grape member add): %w",
				p.ClusterID, ErrForbidden)
		case pgErr.Code == codeInsufficientPrivilege:
			return fmt.Errorf("queueing deployment: %w", forbidden(err))
		}
	}
	switch code, constraint := pgCode(err); {
	case code == codeForeignKeyViolation:
		return fmt.Errorf("queueing deployment: config %s does not belong to cluster %s: %w", p.ConfigID, p.ClusterID, ErrNotFound)
	case code == codeCheckViolation && constraint == "deployments_action":
		return fmt.Errorf("queueing deployment: action %q: %w: use plan, apply or destroy", p.Action, ErrInvalid)
	}
	return fmt.Errorf("queueing deployment: %w", err)
}

// GetDeployment reads one deployment.
func (s *Store) GetDeployment(ctx context.Context, id uuid.UUID) (Deployment, error) {
	rows, err := s.db().Query(ctx, `SELECT `+deploymentColumns+` FROM deployments WHERE id = $1`, id)
	if err != nil {
		return Deployment{}, fmt.Errorf("reading deployment %s: %w", id, err)
	}
	return collectDeployment(rows, "deployment "+id.String())
}

// ListFilter narrows ListDeployments.
type ListFilter struct {
	ClusterID string
	ConfigID  *uuid.UUID
	Statuses  []Status
	Limit     int
}

// ListDeployments returns deployments, newest first.
func (s *Store) ListDeployments(ctx context.Context, f ListFilter) ([]Deployment, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var statuses []string
	for _, st := range f.Statuses {
		statuses = append(statuses, string(st))
	}
	rows, err := s.db().Query(ctx, `SELECT `+deploymentColumns+` FROM deployments
WHERE ($1 = '' OR cluster_id = $1) AND ($2::uuid IS NULL OR config_id = $2)
  AND (coalesce(cardinality($3::text[]), 0) = 0 OR status = ANY($3))
ORDER BY created_at DESC, id DESC LIMIT $4`, f.ClusterID, f.ConfigID, statuses, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing deployments: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[Deployment])
}

// claimQuery takes, in one statement, either an approved deployment this agent
// planned (it holds its config's slot and the agent holds its plan file), or
// else the oldest queued deployment of the cluster whose config has nothing
// running or awaiting approval and nothing older queued. SKIP LOCKED lets
// concurrent agents pass over each other's rows. A config whose local state
// another agent holds (config_state_holders) is left to that agent: any other
// would plan from an empty state; a config whose state is being moved
// (state_moves) waits for the move to end. The partial unique index
// deployments_one_active_per_config turns the remaining race (two claims of
// one config from snapshots taken at the same moment) into a unique
// violation, which Claim retries.
const claimQuery = `
WITH approved AS (
    SELECT d.id, 0 AS rank, d.approved_at AS at
    FROM deployments d
    WHERE d.cluster_id = $1 AND d.status = 'awaiting_approval' AND d.approved_at IS NOT NULL AND d.claimed_by = $2
    ORDER BY d.approved_at, d.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), queued AS (
    SELECT d.id, 1 AS rank, d.created_at AS at
    FROM deployments d
    WHERE d.cluster_id = $1
      AND d.status = 'queued'
      AND NOT EXISTS (
          SELECT 1 FROM deployments busy
          WHERE busy.config_id = d.config_id AND busy.status IN ('in_progress', 'awaiting_approval'))
      AND NOT EXISTS (
          SELECT 1 FROM deployments older
          WHERE older.config_id = d.config_id AND older.status = 'queued'
            AND (older.created_at, older.id) < (d.created_at, d.id))
      AND NOT EXISTS (
          SELECT 1 FROM config_state_holders h
          WHERE h.config_id = d.config_id AND h.agent_id <> $2)
      AND NOT EXISTS (
          SELECT 1 FROM state_moves m
          WHERE m.config_id = d.config_id AND m.status IN ('requested', 'listening', 'sending'))
    ORDER BY d.created_at, d.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), candidate AS (
    SELECT id AS cid, rank FROM approved
    UNION ALL
    SELECT id, rank FROM queued
    ORDER BY rank
    LIMIT 1
)
UPDATE deployments d
SET status = 'in_progress',
    phase = CASE WHEN candidate.rank = 0 THEN 'apply' ELSE 'claimed' END,
    claimed_by = $2,
    claimed_at = CASE WHEN candidate.rank = 0 THEN d.claimed_at ELSE now() END,
    heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => $3),
    started_at = coalesce(d.started_at, now()),
    attempt = CASE WHEN candidate.rank = 0 THEN d.attempt ELSE d.attempt + 1 END,
    error = NULL, error_kind = NULL
FROM candidate
WHERE d.id = candidate.cid
RETURNING ` + deploymentColumns

// Claim takes the next runnable deployment of the cluster for agentID, or
// returns ErrNotFound when there is none.
func (s *Store) Claim(ctx context.Context, clusterID, agentID string, lease time.Duration) (Deployment, error) {
	for attempt := 0; ; attempt++ {
		rows, err := s.db().Query(ctx, claimQuery, clusterID, agentID, lease.Seconds())
		if err != nil {
			return Deployment{}, fmt.Errorf("claiming deployment: %w", err)
		}
		d, err := collectDeployment(rows, "queued deployment")
		if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "deployments_one_active_per_config" && attempt < 10 {
			continue // another agent claimed this config in the same instant
		}
		return d, err
	}
}

// HeartbeatResult tells the runner what changed since its last beat.
type HeartbeatResult struct {
	CancelRequested bool
}

// Heartbeat extends the lease of a running deployment. ErrLeaseLost means the
// row is no longer ours and the run must stop.
func (s *Store) Heartbeat(ctx context.Context, id uuid.UUID, agentID string, lease time.Duration) (HeartbeatResult, error) {
	var res HeartbeatResult
	err := s.db().QueryRow(ctx, `
UPDATE deployments SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $3)
WHERE id = $1 AND claimed_by = $2 AND status = 'in_progress'
RETURNING cancel_requested_at IS NOT NULL`, id, agentID, lease.Seconds()).Scan(&res.CancelRequested)
	if errors.Is(err, pgx.ErrNoRows) {
		return res, fmt.Errorf("heartbeat of deployment %s: %w", id, ErrLeaseLost)
	}
	if err != nil {
		return res, fmt.Errorf("heartbeat of deployment %s: %w", id, err)
	}
	return res, nil
}

// SetPhase records the phase a run enters. It fails with ErrLeaseLost when
// the deployment is no longer ours: a run must not start a phase it lost.
func (s *Store) SetPhase(ctx context.Context, id uuid.UUID, agentID string, phase Phase) error {
	return s.updateOwned(ctx, id, agentID, "phase "+string(phase), `phase = $3`, phase)
}

// SetCommit records the audit commit before terraform starts.
func (s *Store) SetCommit(ctx context.Context, id uuid.UUID, agentID, sha string) error {
	return s.updateOwned(ctx, id, agentID, "commit", `commit_sha = $3`, sha)
}

// SetPlanSummary stores the plan's summary (counts and addresses).
func (s *Store) SetPlanSummary(ctx context.Context, id uuid.UUID, agentID string, summary any) error {
	return s.updateOwned(ctx, id, agentID, "plan summary", `plan_summary = $3`, summary)
}

// SetPlanDiff stores the plan's attribute-level diff (a plandiff.Diff,
// already redacted).
func (s *Store) SetPlanDiff(ctx context.Context, id uuid.UUID, agentID string, diff any) error {
	return s.updateOwned(ctx, id, agentID, "plan diff", `plan_diff = $3`, diff)
}

// SetPolicy stores the policies' verdicts on the plan (a policy.Result). A
// result with warnings also makes the deployment require approval: the
// database raises require_approval, which the agent cannot write itself.
func (s *Store) SetPolicy(ctx context.Context, id uuid.UUID, agentID string, result any) error {
	return s.updateOwned(ctx, id, agentID, "policy verdicts", `policy = $3`, result)
}

// SetEngine records the IaC engine (runner.Engine's name and version) that
// runs the deployment.
func (s *Store) SetEngine(ctx context.Context, id uuid.UUID, agentID, engine, version string) error {
	return s.updateOwned(ctx, id, agentID, "engine", "engine = $3, engine_version = $4", engine, version)
}

// SetOutputs stores terraform outputs after apply (sensitive ones redacted).
func (s *Store) SetOutputs(ctx context.Context, id uuid.UUID, agentID string, outputs any) error {
	return s.updateOwned(ctx, id, agentID, "outputs", `outputs = $3`, outputs)
}

// SetCost stores the cost estimate.
func (s *Store) SetCost(ctx context.Context, id uuid.UUID, agentID string, cost any) error {
	return s.updateOwned(ctx, id, agentID, "cost", `cost = $3`, cost)
}

func (s *Store) updateOwned(ctx context.Context, id uuid.UUID, agentID, what, set string, args ...any) error {
	tag, err := s.db().Exec(ctx, `UPDATE deployments SET `+set+`
WHERE id = $1 AND claimed_by = $2 AND status = 'in_progress'`, append([]any{id, agentID}, args...)...)
	if err != nil {
		return fmt.Errorf("recording %s of deployment %s: %w", what, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("recording %s of deployment %s: %w", what, id, ErrLeaseLost)
	}
	return nil
}

// Outcome is how a run ended.
type Outcome struct {
	Status Status
	Kind   ErrorKind // empty on success
	Error  string    // one clear sentence; the logs hold the detail
}

// Finish writes the final status of a deployment this agent holds.
func (s *Store) Finish(ctx context.Context, id uuid.UUID, agentID string, o Outcome) error {
	if !o.Status.Final() {
		return fmt.Errorf("finishing deployment %s with non-final status %s: %w", id, o.Status, ErrInvalid)
	}
	tag, err := s.db().Exec(ctx, finishQuery, finishArgs(id, agentID, o)...)
	if err != nil {
		return fmt.Errorf("finishing deployment %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("finishing deployment %s: %w", id, ErrLeaseLost)
	}
	return nil
}

const finishQuery = `
UPDATE deployments SET status = $3, error_kind = $4, error = $5, finished_at = now(), lease_expires_at = NULL,
    phase = CASE WHEN $3 = 'succeeded' THEN 'done' ELSE phase END
WHERE id = $1 AND claimed_by = $2 AND status IN ('in_progress', 'awaiting_approval')`

func finishArgs(id uuid.UUID, agentID string, o Outcome) []any {
	var kind, msg any
	if o.Kind != "" {
		kind = o.Kind
	}
	if o.Error != "" {
		msg = o.Error
	}
	return []any{id, agentID, o.Status, kind, msg}
}

// FinishAndClaim writes a deployment's outcome and claims the cluster's next
// one in a single round trip and a single commit (a pipelined batch is one
// implicit transaction). An agent that just freed a slot uses it: it halves
// the durable commits per deployment. The finish error (ErrLeaseLost) and the
// claim are independent: next may be set even when the finish did not apply.
// next is nil when nothing is queued; on a claim error nothing is written and
// the caller falls back to Finish.
func (s *Store) FinishAndClaim(ctx context.Context, id uuid.UUID, agentID string, o Outcome, clusterID string, lease time.Duration) (next *Deployment, finishErr, err error) {
	if !o.Status.Final() {
		return nil, nil, fmt.Errorf("finishing deployment %s with non-final status %s: %w", id, o.Status, ErrInvalid)
	}
	b := &pgx.Batch{}
	b.Queue(finishQuery, finishArgs(id, agentID, o)...)
	b.Queue(claimQuery, clusterID, agentID, lease.Seconds())
	res := s.db().SendBatch(ctx, b)
	tag, execErr := res.Exec()
	rows, qErr := res.Query()
	var d Deployment
	var collectErr error
	if qErr == nil {
		d, collectErr = collectDeployment(rows, "queued deployment")
	}
	closeErr := res.Close()
	switch {
	case execErr != nil:
		return nil, nil, fmt.Errorf("finishing deployment %s: %w", id, execErr)
	case qErr != nil:
		return nil, nil, fmt.Errorf("claiming next deployment: %w", qErr)
	case collectErr != nil && !errors.Is(collectErr, ErrNotFound):
		return nil, nil, fmt.Errorf("claiming next deployment: %w", collectErr)
	case closeErr != nil:
		return nil, nil, fmt.Errorf("finishing deployment %s: %w", id, closeErr)
	}
	if tag.RowsAffected() == 0 {
		finishErr = fmt.Errorf("finishing deployment %s: %w", id, ErrLeaseLost)
	}
	if collectErr == nil {
		next = &d
	}
	return next, finishErr, nil
}

// AwaitApproval parks a planned deployment until a person approves or rejects
// it. The agent keeps the plan file; the lease is dropped because nothing runs.
func (s *Store) AwaitApproval(ctx context.Context, id uuid.UUID, agentID string) error {
	tag, err := s.db().Exec(ctx, `
UPDATE deployments SET status = 'awaiting_approval', phase = 'approval', lease_expires_at = NULL,
    awaiting_approval_at = now()
WHERE id = $1 AND claimed_by = $2 AND status = 'in_progress'`, id, agentID)
	if err != nil {
		return fmt.Errorf("parking deployment %s for approval: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("parking deployment %s for approval: %w", id, ErrLeaseLost)
	}
	return nil
}

// ClaimByID claims one queued deployment by id, under the same rules as
// Claim: its config has nothing running or awaiting approval and nothing
// older queued. ErrNotFound means it is not claimable yet (or not queued).
func (s *Store) ClaimByID(ctx context.Context, id uuid.UUID, agentID string, lease time.Duration) (Deployment, error) {
	rows, err := s.db().Query(ctx, `
UPDATE deployments d
SET status = 'in_progress', phase = 'claimed', claimed_by = $2, claimed_at = now(),
    heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $3),
    started_at = coalesce(d.started_at, now()), attempt = d.attempt + 1, error = NULL, error_kind = NULL
WHERE d.id = $1 AND d.status = 'queued'
  AND NOT EXISTS (SELECT 1 FROM deployments busy
                  WHERE busy.config_id = d.config_id AND busy.status IN ('in_progress', 'awaiting_approval'))
  AND NOT EXISTS (SELECT 1 FROM deployments older
                  WHERE older.config_id = d.config_id AND older.status = 'queued'
                    AND (older.created_at, older.id) < (d.created_at, d.id))
  AND NOT EXISTS (SELECT 1 FROM config_state_holders h WHERE h.config_id = d.config_id AND h.agent_id <> $2)
  AND NOT EXISTS (SELECT 1 FROM state_moves m WHERE m.config_id = d.config_id AND m.status IN ('requested', 'listening', 'sending'))
RETURNING `+deploymentColumns, id, agentID, lease.Seconds())
	if err != nil {
		return Deployment{}, fmt.Errorf("claiming deployment %s: %w", id, err)
	}
	d, err := collectDeployment(rows, "claimable deployment "+id.String())
	if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "deployments_one_active_per_config" {
		return Deployment{}, fmt.Errorf("claiming deployment %s: its config is busy: %w", id, ErrNotFound)
	}
	return d, err
}

// EnqueueClaimed inserts a deployment already claimed by agentID, in one
// transaction, so no other agent of the cluster can take it (`grape drift
// check` runs its check in its own process). ErrNotFound means the config is
// busy now (nothing is written); try again later.
func (s *Store) EnqueueClaimed(ctx context.Context, p EnqueueParams, agentID string, lease time.Duration) (Deployment, error) {
	// A local state held by another agent is that agent's to run: waiting
	// for the config to be free would wait forever.
	if h, err := s.StateHolderOf(ctx, p.ConfigID); err == nil && h.AgentID != agentID {
		return Deployment{}, fmt.Errorf("config %s keeps its state on agent %s (local backend): run this there, with that agent's --agent-id and --data-dir: %w", p.ConfigID, h.AgentID, ErrHeldElsewhere)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return Deployment{}, err
	}
	var out Deployment
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		inner := s.in(tx)
		d, err := inner.Enqueue(ctx, p)
		if err != nil {
			return err
		}
		out, err = inner.ClaimByID(ctx, d.ID, agentID, lease)
		return err
	})
	if err != nil {
		return Deployment{}, err
	}
	return out, nil
}
