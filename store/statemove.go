package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// A state move hands a config's local state from the agent holding it to
// another agent of the cluster (`grape state move`, migration state_move). The
// rows here are the request and its metadata only: the state goes agent to
// agent over TLS (package statehandoff), never through the database.

// MoveStatus is where a state move is.
type MoveStatus string

const (
	// MoveRequested: a person asked; the receiver has not opened its listener yet.
	MoveRequested MoveStatus = "requested"
	// MoveListening: the receiver listens at ReceiverAddr with the pinned certificate.
	MoveListening MoveStatus = "listening"
	// MoveSending: the holder took the move and is sending the state.
	MoveSending MoveStatus = "sending"
	// MoveDone: the receiver verified and stored the state and holds it now.
	MoveDone MoveStatus = "done"
	// MoveFailed: the move ended without moving anything; Error says why.
	MoveFailed MoveStatus = "failed"
)

// Final reports whether the move has ended.
func (s MoveStatus) Final() bool { return s == MoveDone || s == MoveFailed }

// ErrMoveRefused: a state move cannot be asked for or go on now; the error
// says why and what to do.
var ErrMoveRefused = errors.New("state move refused")

// The audit actions of a move, written by the database's trigger on
// state_moves for every writer.
const (
	AuditStateMoveRequest AuditAction = "state.move_requested"
	AuditStateMoved       AuditAction = "state.moved"
	AuditStateMoveFail    AuditAction = "state.move_failed"
)

// StateMove is one request to move a config's local state.
type StateMove struct {
	ID                 uuid.UUID  `db:"id" json:"id"`
	ClusterID          string     `db:"cluster_id" json:"cluster_id"`
	ConfigID           uuid.UUID  `db:"config_id" json:"config_id"`
	FromAgent          string     `db:"from_agent" json:"from_agent"`
	ToAgent            string     `db:"to_agent" json:"to_agent"`
	Status             MoveStatus `db:"status" json:"status"`
	RequestedBy        string     `db:"requested_by" json:"requested_by"`
	Reason             string     `db:"reason" json:"reason,omitempty"`
	ReceiverAddr       *string    `db:"receiver_addr" json:"receiver_addr,omitempty"`
	ReceiverCertSHA256 *string    `db:"receiver_cert_sha256" json:"receiver_cert_sha256,omitempty"`
	TokenSHA256        *string    `db:"token_sha256" json:"-"`
	StateSHA256        *string    `db:"state_sha256" json:"state_sha256,omitempty"`
	Files              *int       `db:"files" json:"files,omitempty"`
	Error              *string    `db:"error" json:"error,omitempty"`
	CreatedAt          time.Time  `db:"created_at" json:"created_at"`
	UpdatedAt          time.Time  `db:"updated_at" json:"updated_at"`
	ExpiresAt          time.Time  `db:"expires_at" json:"expires_at"`
	FinishedAt         *time.Time `db:"finished_at" json:"finished_at,omitempty"`
}

const stateMoveColumns = `id, cluster_id, config_id, from_agent, to_agent, status, requested_by, reason,
receiver_addr, receiver_cert_sha256, token_sha256, state_sha256, files, error, created_at, updated_at, expires_at, finished_at`

const openMoveStatuses = `('requested', 'listening', 'sending')`

// StateMoveRequest is what `grape state move` asks for.
type StateMoveRequest struct {
	ClusterID string
	ConfigID  uuid.UUID
	ToAgent   string
	Actor     string
	Reason    string
	// Timeout bounds the whole move; an open move past it is failed by any
	// agent of the cluster.
	Timeout time.Duration
	// OnlineWithin: agents seen longer ago count as offline.
	OnlineWithin time.Duration
}

// RequestStateMove records a move of a config's local state from its holder
// to req.ToAgent, audited. It is refused (ErrMoveRefused, saying what to do)
// when no agent holds the state, the target holds it already, is not an
// online agent of the cluster, or was not started with --state-handoff-addr;
// when the holder is offline; when a deployment of the config runs or awaits
// approval; or when a move of the config is open.
func (s *Store) RequestStateMove(ctx context.Context, req StateMoveRequest) (StateMove, error) {
	var m StateMove
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		var holder string
		err := tx.QueryRow(ctx, `SELECT agent_id FROM config_state_holders WHERE config_id = $1 AND cluster_id = $2 FOR UPDATE`,
			req.ConfigID, req.ClusterID).Scan(&holder)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("no agent holds a local state of this config (it was never applied with the local backend, or the holder was released): nothing to move: %w", ErrMoveRefused)
		}
		if err != nil {
			return fmt.Errorf("reading the state holder: %w", err)
		}
		if holder == req.ToAgent {
			return fmt.Errorf("agent %s holds the state already: nothing to move: %w", holder, ErrMoveRefused)
		}
		if err := checkMoveAgents(ctx, tx, req, holder); err != nil {
			return err
		}
		var busy uuid.UUID
		var status string
		err = tx.QueryRow(ctx, `SELECT id, status FROM deployments WHERE config_id = $1 AND status IN ('in_progress', 'awaiting_approval') LIMIT 1`,
			req.ConfigID).Scan(&busy, &status)
		if err == nil {
			return fmt.Errorf("deployment %s of this config is %s: wait for it to end (or grape cancel / grape reject it), then move the state: %w", busy, status, ErrMoveRefused)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("reading the config's running deployments: %w", err)
		}
		rows, err := tx.Query(ctx, `
INSERT INTO state_moves (cluster_id, config_id, from_agent, to_agent, requested_by, reason, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
RETURNING `+stateMoveColumns, req.ClusterID, req.ConfigID, holder, req.ToAgent, req.Actor, req.Reason, req.Timeout.Seconds())
		if err != nil {
			return err
		}
		// The database's trigger records state.move_requested.
		if m, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[StateMove]); err != nil {
			if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "state_moves_one_open" {
				return fmt.Errorf("a move of this config's state is already under way: see `grape state moves`: %w", ErrMoveRefused)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return StateMove{}, fmt.Errorf("moving the state of config %s to agent %s: %w", req.ConfigID, req.ToAgent, err)
	}
	return m, nil
}

// checkMoveAgents refuses a move whose receiver is not an online agent of
// the cluster able to receive, or whose holder is offline (only the holder
// can send its state).
func checkMoveAgents(ctx context.Context, tx pgx.Tx, req StateMoveRequest, holder string) error {
	type seen struct {
		cluster  string
		addr     *string
		lastSeen time.Time
		stopped  *time.Time
		online   bool
	}
	read := func(id string) (seen, error) {
		var a seen
		err := tx.QueryRow(ctx, `
SELECT cluster_id, state_handoff_addr, last_heartbeat_at, stopped_at,
       stopped_at IS NULL AND last_heartbeat_at > now() - make_interval(secs => $2)
FROM agents WHERE id = $1`, id, req.OnlineWithin.Seconds()).Scan(&a.cluster, &a.addr, &a.lastSeen, &a.stopped, &a.online)
		return a, err
	}
	to, err := read(req.ToAgent)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && to.cluster != req.ClusterID) {
		return fmt.Errorf("%s is not an agent of cluster %s: see `grape status --cluster %s` for its agents: %w", req.ToAgent, req.ClusterID, req.ClusterID, ErrMoveRefused)
	}
	if err != nil {
		return fmt.Errorf("reading agent %s: %w", req.ToAgent, err)
	}
	if !to.online {
		return fmt.Errorf("agent %s is offline (last seen %s): start it, with --state-handoff-addr HOST:PORT, then move the state: %w", req.ToAgent, to.lastSeen.UTC().Format(time.RFC3339), ErrMoveRefused)
	}
	if to.addr == nil {
		return fmt.Errorf("agent %s was not started with --state-handoff-addr HOST:PORT, so it cannot receive a state: restart it with that flag (an address the holder can reach), then move the state: %w", req.ToAgent, ErrMoveRefused)
	}
	from, err := read(holder)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("reading agent %s: %w", holder, err)
	}
	if err != nil || !from.online {
		return fmt.Errorf("agent %s, which holds the state, is offline: only it can hand the state over: start it (same --agent-id and --data-dir), or copy state/%s/%s/ by hand and `grape state release` (docs/operations.md): %w",
			holder, req.ClusterID, req.ConfigID, ErrMoveRefused)
	}
	return nil
}

// GetStateMove reads one move.
func (s *Store) GetStateMove(ctx context.Context, id uuid.UUID) (StateMove, error) {
	rows, err := s.db().Query(ctx, `SELECT `+stateMoveColumns+` FROM state_moves WHERE id = $1`, id)
	if err != nil {
		return StateMove{}, fmt.Errorf("reading state move %s: %w", id, err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[StateMove])
	if err != nil {
		return StateMove{}, notFound(err, "state move "+id.String())
	}
	return m, nil
}

// ListStateMoves returns a cluster's moves, newest first.
func (s *Store) ListStateMoves(ctx context.Context, clusterID string, limit int) ([]StateMove, error) {
	rows, err := s.db().Query(ctx, `SELECT `+stateMoveColumns+` FROM state_moves WHERE cluster_id = $1 ORDER BY created_at DESC, id LIMIT $2`,
		clusterID, limit)
	if err != nil {
		return nil, fmt.Errorf("listing state moves of cluster %s: %w", clusterID, err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[StateMove])
}

// OpenStateMoves returns the open moves agentID sends or receives.
func (s *Store) OpenStateMoves(ctx context.Context, clusterID, agentID string) ([]StateMove, error) {
	rows, err := s.db().Query(ctx, `SELECT `+stateMoveColumns+` FROM state_moves
WHERE cluster_id = $1 AND status IN `+openMoveStatuses+` AND (from_agent = $2 OR to_agent = $2)
ORDER BY created_at, id`, clusterID, agentID)
	if err != nil {
		return nil, fmt.Errorf("reading open state moves of agent %s: %w", agentID, err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[StateMove])
}

// ListenStateMove publishes the receiver's one-time listener: the address
// to dial and the SHA-256 of the certificate it presents. ErrNotFound: the
// move is no longer requested of this agent.
func (s *Store) ListenStateMove(ctx context.Context, id uuid.UUID, agentID, addr, certSHA256 string) error {
	tag, err := s.db().Exec(ctx, `
UPDATE state_moves SET status = 'listening', receiver_addr = $3, receiver_cert_sha256 = $4, updated_at = now()
WHERE id = $1 AND to_agent = $2 AND status = 'requested' AND expires_at > now()`, id, agentID, addr, certSHA256)
	if err != nil {
		return fmt.Errorf("publishing the listener of state move %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("state move %s is no longer requested of agent %s: %w", id, agentID, ErrNotFound)
	}
	return nil
}

// SendStateMove is the holder taking a move whose receiver listens: it
// publishes the hash of the one-time token it will present. A deployment of
// the config that runs or awaits approval now refuses it (ErrMoveRefused);
// ErrNotFound: the move is not listening for this sender any more.
func (s *Store) SendStateMove(ctx context.Context, id uuid.UUID, agentID, tokenSHA256 string) error {
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		var busy uuid.UUID
		var status string
		err := tx.QueryRow(ctx, `
SELECT d.id, d.status FROM deployments d JOIN state_moves m ON m.config_id = d.config_id
WHERE m.id = $1 AND d.status IN ('in_progress', 'awaiting_approval') LIMIT 1`, id).Scan(&busy, &status)
		if err == nil {
			return fmt.Errorf("deployment %s of the config is %s: %w", busy, status, ErrMoveRefused)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		tag, err := tx.Exec(ctx, `
UPDATE state_moves SET status = 'sending', token_sha256 = $3, updated_at = now()
WHERE id = $1 AND from_agent = $2 AND status = 'listening' AND expires_at > now()`, id, agentID, tokenSHA256)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("it is no longer waiting for agent %s: %w", agentID, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("starting to send state move %s: %w", id, err)
	}
	return nil
}

// CompleteStateMove is the receiver's one transaction once it verified and
// stored the state: the holder row names it, the move is done, and the
// audit trail says so (grape_state_move_complete).
func (s *Store) CompleteStateMove(ctx context.Context, id uuid.UUID, agentID, stateSHA256 string, files int) error {
	if _, err := s.db().Exec(ctx, `SELECT grape_state_move_complete($1, $2, $3, $4)`, id, agentID, stateSHA256, files); err != nil {
		if code, _ := pgCode(err); code == codeCheckViolation {
			return fmt.Errorf("completing state move %s: %w: %w", id, ErrMoveRefused, err)
		}
		return fmt.Errorf("completing state move %s: %w", id, err)
	}
	return nil
}

// FailStateMove ends an open move as failed with reason (the database's
// trigger records it in the audit trail). It reports false when the move
// had already ended.
func (s *Store) FailStateMove(ctx context.Context, id uuid.UUID, reason string) (bool, error) {
	tag, err := s.db().Exec(ctx, `
UPDATE state_moves SET status = 'failed', error = left($2, 2000), updated_at = now(), finished_at = now()
WHERE id = $1 AND status IN `+openMoveStatuses, id, reason)
	if err != nil {
		return false, fmt.Errorf("failing state move %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ExpireStateMoves fails the cluster's open moves past their deadline, each
// with what it was waiting for. Any agent of the cluster runs it.
func (s *Store) ExpireStateMoves(ctx context.Context, clusterID string) ([]StateMove, error) {
	rows, err := s.db().Query(ctx, `
UPDATE state_moves SET status = 'failed', updated_at = now(), finished_at = now(),
    error = 'timed out: ' || CASE status
        WHEN 'requested' THEN 'agent ' || to_agent || ' never opened its listener (is it running, with --state-handoff-addr?)'
        WHEN 'listening' THEN 'agent ' || from_agent || ', which holds the state, never started sending (is it running?)'
        ELSE 'the transfer from agent ' || from_agent || ' to agent ' || to_agent || ' did not finish' END
        || '; nothing was moved'
WHERE cluster_id = $1 AND status IN `+openMoveStatuses+` AND expires_at <= now()
RETURNING `+stateMoveColumns, clusterID)
	if err != nil {
		return nil, fmt.Errorf("expiring state moves of cluster %s: %w", clusterID, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[StateMove])
	if err != nil {
		return nil, fmt.Errorf("expiring state moves of cluster %s: %w", clusterID, err)
	}
	return out, nil
}

// SetAgentStateHandoff records whether (addr non-nil) and where the agent
// receives moved states. ErrNotFound: the agent is not registered yet.
func (s *Store) SetAgentStateHandoff(ctx context.Context, agentID string, addr *string) error {
	tag, err := s.db().Exec(ctx, `UPDATE agents SET state_handoff_addr = $2 WHERE id = $1`, agentID, addr)
	if err != nil {
		return fmt.Errorf("recording the state handoff address of agent %s: %w", agentID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("agent %s: %w", agentID, ErrNotFound)
	}
	return nil
}
