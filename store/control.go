package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/grapehq/grape/internal/ptr"
)

// ErrWrongState: the deployment is not in a state that allows the request.
var ErrWrongState = errors.New("not allowed in the deployment's current state")

// ErrApprovalRefused: what was planned no longer matches the intent.
var ErrApprovalRefused = errors.New("approval refused")

// RequestCancel cancels a deployment. One that has not started (queued, or
// parked for approval) ends at once; a running one gets a cancel request that
// its agent acts on (SIGINT to terraform, then the process group is killed).
func (s *Store) RequestCancel(ctx context.Context, id uuid.UUID, by string) (Deployment, error) {
	if s.asUser {
		// The guard keeps a first request and says nothing: a finished run
		// is refused here, as below.
		d, err := s.GetDeployment(ctx, id)
		if err != nil {
			return Deployment{}, fmt.Errorf("cancelling deployment %s: %w", id, err)
		}
		if d.Status.Final() {
			return Deployment{}, fmt.Errorf("cancelling deployment %s: deployment %s is already %s: %w", id, id, d.Status, ErrWrongState)
		}
		return s.decideAsUser(ctx, id, "cancelling", `cancel_requested_at = now()`)
	}
	var out Deployment
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		d, err := lockDeployment(ctx, tx, id)
		if err != nil {
			return err
		}
		switch d.Status {
		case StatusQueued, StatusAwaitingApproval:
			msg := fmt.Sprintf("cancelled by %s before %s", by, map[Status]string{StatusQueued: "it started", StatusAwaitingApproval: "approval"}[d.Status])
			if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'cancelled', error_kind = 'cancelled', error = $2,
    cancel_requested_at = now(), cancel_requested_by = $3, finished_at = now() WHERE id = $1`, id, msg, by); err != nil {
				return err
			}
			if err := appendAgentLine(ctx, tx, id, msg); err != nil {
				return err
			}
		case StatusInProgress:
			if _, err := tx.Exec(ctx, `UPDATE deployments SET cancel_requested_at = coalesce(cancel_requested_at, now()),
    cancel_requested_by = coalesce(cancel_requested_by, $2) WHERE id = $1`, id, by); err != nil {
				return err
			}
		default:
			return fmt.Errorf("deployment %s is already %s: %w", id, d.Status, ErrWrongState)
		}
		out, err = getDeploymentTx(ctx, tx, id)
		return err
	})
	if err != nil {
		return Deployment{}, fmt.Errorf("cancelling deployment %s: %w", id, err)
	}
	return out, nil
}

// Approve lets the agent that planned a deployment apply exactly that plan.
// It is refused — and the deployment ends failed — when the config changed
// since the plan was made: the plan no longer says what the intent says.
// comment (optional) is the approver's reason, kept with the decision.
func (s *Store) Approve(ctx context.Context, id uuid.UUID, by, comment string) (Deployment, error) {
	if err := ValidateReviewComment(comment); err != nil {
		return Deployment{}, err
	}
	if s.asUser {
		// A plan older than its config can never be approved: end it, as
		// the owner's path below does (a user may not write the status).
		var stale *string
		if err := s.db().QueryRow(ctx, `SELECT grape_fail_stale_approval($1)`, id).Scan(&stale); err != nil {
			return Deployment{}, fmt.Errorf("approving deployment %s: %w", id, err)
		}
		if stale != nil {
			return Deployment{}, fmt.Errorf("%s: %w", *stale, ErrApprovalRefused)
		}
		return s.decideAsUser(ctx, id, "approving", `approved_at = now(), review_comment = $2`, commentArg(comment))
	}
	var out Deployment
	var refused error
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		d, err := lockDeployment(ctx, tx, id)
		if err != nil {
			return err
		}
		if d.Status != StatusAwaitingApproval {
			return fmt.Errorf("deployment %s is %s, not awaiting approval: %w", id, d.Status, ErrWrongState)
		}
		if d.ApprovedAt != nil {
			out = d
			return nil // approving twice is harmless
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT version FROM configs WHERE id = $1`, d.ConfigID).Scan(&current); err != nil {
			return fmt.Errorf("reading config version: %w", err)
		}
		if d.ConfigVersion != nil && *d.ConfigVersion != current {
			msg := fmt.Sprintf("approval refused: the config changed from v%d to v%d since this plan was made; queue a new deployment", *d.ConfigVersion, current)
			if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'failed', error_kind = 'approval_refused', error = $2,
    finished_at = now() WHERE id = $1`, id, msg); err != nil {
				return err
			}
			if err := appendAgentLine(ctx, tx, id, msg); err != nil {
				return err
			}
			refused = fmt.Errorf("%s: %w", msg, ErrApprovalRefused)
			return nil
		}
		// The guard trigger applies four eyes and the user's role.
		if _, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now(), approved_by = $2, review_comment = $3 WHERE id = $1`, id, by, commentArg(comment)); err != nil {
			return forbidden(err)
		}
		if err := appendAgentLine(ctx, tx, id, "approved by "+by+said(comment)); err != nil {
			return err
		}
		out, err = getDeploymentTx(ctx, tx, id)
		return err
	})
	if err != nil {
		return Deployment{}, fmt.Errorf("approving deployment %s: %w", id, err)
	}
	if refused != nil {
		return Deployment{}, refused
	}
	return out, nil
}

// Reject ends a deployment awaiting approval without applying it.
func (s *Store) Reject(ctx context.Context, id uuid.UUID, by, comment string) (Deployment, error) {
	if err := ValidateReviewComment(comment); err != nil {
		return Deployment{}, err
	}
	if s.asUser {
		return s.decideAsUser(ctx, id, "rejecting", `rejected_at = now(), review_comment = $2`, commentArg(comment))
	}
	var out Deployment
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		d, err := lockDeployment(ctx, tx, id)
		if err != nil {
			return err
		}
		if d.Status != StatusAwaitingApproval || d.ApprovedAt != nil {
			return fmt.Errorf("deployment %s is %s, not awaiting approval: %w", id, d.Status, ErrWrongState)
		}
		msg := "rejected by " + by
		if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'cancelled', error_kind = 'rejected', error = $2,
    rejected_at = now(), rejected_by = $3, review_comment = $4, finished_at = now() WHERE id = $1`, id, msg, by, commentArg(comment)); err != nil {
			return forbidden(err)
		}
		if err := appendAgentLine(ctx, tx, id, msg+said(comment)); err != nil {
			return err
		}
		out, err = getDeploymentTx(ctx, tx, id)
		return err
	})
	if err != nil {
		return Deployment{}, fmt.Errorf("rejecting deployment %s: %w", id, err)
	}
	return out, nil
}

// decideAsUser is approve, reject or cancel for a signed-in user (AsUser):
// one UPDATE of the columns a user may write. The database does the rest
// (migrations 0003, 0008): the guard trigger checks the role, four eyes and
// the state, records who, and ends a run that has not started with its log
// line; the user_request policy hides the row from anyone below operator.
func (s *Store) decideAsUser(ctx context.Context, id uuid.UUID, verb, set string, args ...any) (Deployment, error) {
	rows, err := s.db().Query(ctx, `UPDATE deployments SET `+set+` WHERE id = $1 RETURNING `+deploymentColumns, append([]any{id}, args...)...)
	if err != nil {
		return Deployment{}, fmt.Errorf("%s deployment %s: %w", verb, id, decisionError(err))
	}
	d, err := collectDeployment(rows, "deployment "+id.String())
	if err == nil {
		return d, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Deployment{}, fmt.Errorf("%s deployment %s: %w", verb, id, decisionError(err))
	}
	// Not updated: invisible to the user (404), or visible but below the
	// policy's role.
	var role *string
	if qerr := s.db().QueryRow(ctx, `SELECT grape_my_role(cluster_id) FROM deployments WHERE id = $1`, id).Scan(&role); qerr != nil {
		return Deployment{}, fmt.Errorf("%s deployment %s: %w", verb, id, notFound(qerr, "deployment "+id.String()))
	}
	return Deployment{}, fmt.Errorf("%s deployment %s: your role on its cluster (%s) does not allow it; ask an admin of the cluster (grape member add): %w",
		verb, id, cmp.Or(ptr.Deref(role), "none"), ErrForbidden)
}

// decisionError types what the guard trigger raises.
func decisionError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == codeInsufficientPrivilege:
		return forbidden(err)
	case pgErr.Code == codeCheckViolation && strings.HasPrefix(pgErr.Message, "approval refused"):
		return fmt.Errorf("%s: %w", pgErr.Message, ErrApprovalRefused)
	case pgErr.Code == codeCheckViolation && pgErr.ConstraintName == "":
		return fmt.Errorf("%s: %w", pgErr.Message, ErrWrongState)
	}
	return err
}

func lockDeployment(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Deployment, error) {
	rows, err := tx.Query(ctx, `SELECT `+deploymentColumns+` FROM deployments WHERE id = $1 FOR UPDATE`, id)
	if err != nil {
		return Deployment{}, err
	}
	return collectDeployment(rows, "deployment "+id.String())
}

func getDeploymentTx(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Deployment, error) {
	rows, err := tx.Query(ctx, `SELECT `+deploymentColumns+` FROM deployments WHERE id = $1`, id)
	if err != nil {
		return Deployment{}, err
	}
	return collectDeployment(rows, "deployment "+id.String())
}

// ValidateReviewComment repeats the database's rule for review comments
// (deployments_review_comment), so front ends refuse a bad one with a clear
// message before anything is decided.
func ValidateReviewComment(c string) error {
	if n := utf8.RuneCountInString(c); n > 2000 {
		return fmt.Errorf("a review comment has at most 2,000 characters, this one %d: %w", n, ErrInvalid)
	}
	for _, r := range c {
		if r != '\n' && r != '\t' && (r < 0x20 || r == 0x7f) {
			return fmt.Errorf("a review comment may not hold control characters other than newline and tab (found %U): %w", r, ErrInvalid)
		}
	}
	return nil
}

// commentArg is a review comment as the column takes it: NULL for none.
func commentArg(comment string) *string {
	if comment = strings.TrimSpace(comment); comment == "" {
		return nil
	}
	return &comment
}

// said quotes a review comment for the deployment's log.
func said(comment string) string {
	if comment = strings.TrimSpace(comment); comment == "" {
		return ""
	}
	return fmt.Sprintf(": %q", comment)
}
