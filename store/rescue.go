package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// RescueDecision says what happens to a deployment whose agent stopped
// heartbeating.
type RescueDecision struct {
	Requeue bool
	Outcome Outcome // when not requeued
	Note    string  // the agent log line recorded on the deployment
}

// applyStarted reports whether a phase may have changed infrastructure.
func applyStarted(p Phase) bool {
	return p == PhaseApply || p == PhaseOutputs || p == PhaseDone
}

// DecideRescue is the rule for an expired lease: before apply nothing was
// changed, so the deployment may run again (bounded by max attempts); once
// apply started, infrastructure may be half-changed and a person must look,
// so it fails and is never re-applied silently.
func DecideRescue(d Deployment) RescueDecision {
	agent := "unknown"
	if d.ClaimedBy != nil {
		agent = *d.ClaimedBy
	}
	phase := d.PhaseName()
	switch {
	case d.Action == ActionDrift:
		// A drift check changes nothing, but re-running it is the scheduler's
		// call, not the queue's: the next pass checks again.
		msg := fmt.Sprintf("agent %s lost during drift check (%s)", agent, phase)
		return RescueDecision{Outcome: Outcome{Status: StatusFailed, Kind: KindAgentLost, Error: msg}, Note: msg}
	case phase == PhaseOutputs || phase == PhaseDone:
		// The apply itself finished (the agent records outputs only after
		// terraform apply exited successfully): say so, so nobody hunts
		// for a half-applied change that is not there.
		msg := fmt.Sprintf("agent %s lost during %s, after the apply completed: the infrastructure is as planned, but the deployment's outputs were not recorded; deploy again to record them", agent, phase)
		return RescueDecision{Outcome: Outcome{Status: StatusFailed, Kind: KindAgentLost, Error: msg}, Note: msg}
	case applyStarted(phase):
		msg := fmt.Sprintf("agent %s lost during apply: infrastructure may be partly changed; check the state (and any state lock it left) before deploying again", agent)
		return RescueDecision{Outcome: Outcome{Status: StatusFailed, Kind: KindAgentLost, Error: msg}, Note: msg}
	case d.CancelRequestedAt != nil:
		msg := fmt.Sprintf("agent %s lost during %s; cancel was requested, so it is not retried", agent, phase)
		return RescueDecision{Outcome: Outcome{Status: StatusCancelled, Kind: KindCancelled, Error: msg}, Note: msg}
	case d.Attempt >= d.MaxAttempts:
		msg := fmt.Sprintf("agent %s lost during %s on attempt %d of %d; no attempts left", agent, phase, d.Attempt, d.MaxAttempts)
		return RescueDecision{Outcome: Outcome{Status: StatusFailed, Kind: KindAgentLost, Error: msg}, Note: msg}
	default:
		return RescueDecision{Requeue: true, Note: fmt.Sprintf("agent %s lost during %s on attempt %d of %d; requeued", agent, phase, d.Attempt, d.MaxAttempts)}
	}
}

// Rescued reports one deployment taken back from a lost agent.
type Rescued struct {
	Deployment Deployment
	Decision   RescueDecision
}

// RescueExpired ends or requeues the cluster's in-progress deployments whose
// lease has expired, fails approved deployments whose planning agent is
// gone (their saved plan went with it), and cancels approvals that expired
// (ExpireApprovals). Any live agent of the cluster may
// call it; SKIP LOCKED keeps two rescuers off the same row.
func (s *Store) RescueExpired(ctx context.Context, clusterID string, agentOffline time.Duration) ([]Rescued, error) {
	var out []Rescued
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+deploymentColumns+` FROM deployments
WHERE cluster_id = $1 AND status = 'in_progress' AND lease_expires_at < now()
ORDER BY lease_expires_at FOR UPDATE SKIP LOCKED`, clusterID)
		if err != nil {
			return err
		}
		expired, err := pgx.CollectRows(rows, pgx.RowToStructByName[Deployment])
		if err != nil {
			return err
		}
		for _, d := range expired {
			dec := DecideRescue(d)
			if dec.Requeue {
				_, err = tx.Exec(ctx, `UPDATE deployments SET status = 'queued', phase = NULL, claimed_by = NULL,
    claimed_at = NULL, lease_expires_at = NULL, heartbeat_at = NULL WHERE id = $1`, d.ID)
			} else {
				_, err = tx.Exec(ctx, `UPDATE deployments SET status = $2, error_kind = $3, error = $4,
    finished_at = now(), lease_expires_at = NULL WHERE id = $1`, d.ID, dec.Outcome.Status, dec.Outcome.Kind, dec.Outcome.Error)
			}
			if err != nil {
				return fmt.Errorf("rescuing deployment %s: %w", d.ID, err)
			}
			if err := appendAgentLine(ctx, tx, d.ID, dec.Note); err != nil {
				return err
			}
			out = append(out, Rescued{Deployment: d, Decision: dec})
		}

		// Approved plans whose agent is offline can never be applied.
		rows, err = tx.Query(ctx, `SELECT `+deploymentColumns+` FROM deployments d
WHERE d.cluster_id = $1 AND d.status = 'awaiting_approval' AND d.approved_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = d.claimed_by AND a.stopped_at IS NULL
                  AND a.last_heartbeat_at > now() - make_interval(secs => $2))
FOR UPDATE SKIP LOCKED`, clusterID, agentOffline.Seconds())
		if err != nil {
			return err
		}
		orphans, err := pgx.CollectRows(rows, pgx.RowToStructByName[Deployment])
		if err != nil {
			return err
		}
		for _, d := range orphans {
			agent := ""
			if d.ClaimedBy != nil {
				agent = *d.ClaimedBy
			}
			msg := fmt.Sprintf("approved, but agent %s that holds the saved plan is offline: queue a new deployment to plan again", agent)
			dec := RescueDecision{Outcome: Outcome{Status: StatusFailed, Kind: KindAgentLost, Error: msg}, Note: msg}
			if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'failed', error_kind = 'agent_lost', error = $2,
    finished_at = now() WHERE id = $1`, d.ID, msg); err != nil {
				return fmt.Errorf("failing orphaned approval %s: %w", d.ID, err)
			}
			if err := appendAgentLine(ctx, tx, d.ID, msg); err != nil {
				return err
			}
			out = append(out, Rescued{Deployment: d, Decision: dec})
		}

		// Plans nobody decided on within their config's approval timeout.
		lapsed, err := expireApprovals(ctx, tx, clusterID)
		if err != nil {
			return err
		}
		out = append(out, lapsed...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rescuing expired deployments of cluster %s: %w", clusterID, err)
	}
	return out, nil
}

// appendAgentLine adds one agent line after the deployment's last line. Used
// outside a run (rescue, CLI actions); a run's own lines go through logstream.
func appendAgentLine(ctx context.Context, q execer, id uuid.UUID, line string) error {
	_, err := q.Exec(ctx, `INSERT INTO deployment_logs (deployment_id, seq, stream, line)
SELECT $1, coalesce(max(seq), 0) + 1, 'agent', $2 FROM deployment_logs WHERE deployment_id = $1`, id, line)
	if err != nil {
		return fmt.Errorf("appending log line to deployment %s: %w", id, err)
	}
	return nil
}
