package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Role is what a person may do on a cluster (migration 0008_access). Each role
// includes the ones before it.
type Role string

const (
	RoleViewer   Role = "viewer"   // read
	RoleOperator Role = "operator" // + queue plan/apply/destroy, cancel
	RoleApprover Role = "approver" // + approve, reject
	RoleAdmin    Role = "admin"    // + edit configs and settings, manage memberships
)

// Roles lists the roles from least to most.
var Roles = []Role{RoleViewer, RoleOperator, RoleApprover, RoleAdmin}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: %w: use viewer, operator, approver or admin", s, ErrInvalid)
}

// Allows reports whether r includes what min may do.
func (r Role) Allows(min Role) bool { return r.rank() >= min.rank() }

func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i + 1
		}
	}
	return 0
}

// ErrForbidden: the database refused the request for this user or role (a
// missing role on the cluster, or four eyes).
var ErrForbidden = errors.New("forbidden")

// forbidden turns a privilege refusal into ErrForbidden with the server's
// message and hint, which name the rule and the fix.
func forbidden(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeInsufficientPrivilege {
		msg := pgErr.Message
		if pgErr.Hint != "" {
			msg += " (" + pgErr.Hint + ")"
		}
		return fmt.Errorf("%s: %w", msg, ErrForbidden)
	}
	return err
}

// Membership is a user's role on a cluster.
type Membership struct {
	ClusterID string    `db:"cluster_id" json:"cluster_id"`
	UserID    uuid.UUID `db:"user_id" json:"user_id"`
	Role      Role      `db:"role" json:"role"`
	CreatedAt time.Time `db:"created_at" json:"created_at"`
	CreatedBy string    `db:"created_by" json:"created_by"`
}

// SetMember gives a user a role on a cluster, replacing any role they had.
func (s *Store) SetMember(ctx context.Context, clusterID string, user uuid.UUID, role Role) (Membership, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Membership{}, err
	}
	rows, err := s.db().Query(ctx, `
INSERT INTO memberships (cluster_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (cluster_id, user_id) DO UPDATE SET role = EXCLUDED.role
RETURNING cluster_id, user_id, role, created_at, created_by`, clusterID, user, role)
	if err == nil {
		var m Membership
		m, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Membership])
		if err == nil {
			return m, nil
		}
	}
	if code, _ := pgCode(err); code == codeForeignKeyViolation {
		return Membership{}, fmt.Errorf("adding %s to cluster %s: cluster does not exist: %w", user, clusterID, ErrNotFound)
	}
	return Membership{}, fmt.Errorf("adding %s to cluster %s: %w", user, clusterID, forbidden(err))
}

// RemoveMember takes a user's role on a cluster away.
func (s *Store) RemoveMember(ctx context.Context, clusterID string, user uuid.UUID) error {
	tag, err := s.db().Exec(ctx, `DELETE FROM memberships WHERE cluster_id = $1 AND user_id = $2`, clusterID, user)
	if err != nil {
		return fmt.Errorf("removing %s from cluster %s: %w", user, clusterID, forbidden(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("removing %s from cluster %s: no such member: %w", user, clusterID, ErrNotFound)
	}
	return nil
}

// ListMembers lists a cluster's memberships ("" lists every cluster's).
func (s *Store) ListMembers(ctx context.Context, clusterID string) ([]Membership, error) {
	rows, err := s.db().Query(ctx, `SELECT cluster_id, user_id, role, created_at, created_by FROM memberships
WHERE $1 = '' OR cluster_id = $1 ORDER BY cluster_id, grape_role_rank(role) DESC, user_id`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("listing members: %w", err)
	}
	ms, err := pgx.CollectRows(rows, pgx.RowToStructByName[Membership])
	if err != nil {
		return nil, fmt.Errorf("listing members: %w", err)
	}
	return ms, nil
}

// SetFourEyes turns the cluster's four-eyes rule on or off: when on, whoever
// requested a deployment cannot approve it.
func (s *Store) SetFourEyes(ctx context.Context, clusterID string, on bool) error {
	tag, err := s.db().Exec(ctx, `UPDATE clusters SET four_eyes = $2 WHERE id = $1`, clusterID, on)
	if err != nil {
		return fmt.Errorf("setting four eyes of cluster %s: %w", clusterID, forbidden(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("setting four eyes of cluster %s: %w", clusterID, ErrNotFound)
	}
	return nil
}

// FourEyes reads the cluster's four-eyes setting.
func (s *Store) FourEyes(ctx context.Context, clusterID string) (bool, error) {
	var on bool
	if err := s.db().QueryRow(ctx, `SELECT four_eyes FROM clusters WHERE id = $1`, clusterID).Scan(&on); err != nil {
		return false, notFound(err, "cluster "+clusterID)
	}
	return on, nil
}

// MyRole is the caller's role on a cluster as the database sees it (admin
// for the tables' owner), or "" when it has none.
func (s *Store) MyRole(ctx context.Context, clusterID string) (Role, error) {
	var r *string
	if err := s.db().QueryRow(ctx, `SELECT grape_my_role($1)`, clusterID).Scan(&r); err != nil {
		return "", fmt.Errorf("reading role on cluster %s: %w", clusterID, err)
	}
	if r == nil {
		return "", nil
	}
	return Role(*r), nil
}

// AuditEvent is one row of the audit trail.
type AuditEvent struct {
	ID        int64           `db:"id" json:"id"`
	At        time.Time       `db:"at" json:"at"`
	Actor     string          `db:"actor" json:"actor"`
	Action    string          `db:"action" json:"action"`
	ClusterID *string         `db:"cluster_id" json:"cluster_id,omitempty"`
	TargetID  *string         `db:"target_id" json:"target_id,omitempty"`
	Details   json.RawMessage `db:"details" json:"details"`
}

// AuditFilter narrows ListAudit; zero values match everything.
type AuditFilter struct {
	ClusterID string
	TargetID  string // e.g. a config's or a deployment's id
	Since     time.Time
	Limit     int // default 1000
}

// ListAudit reads the audit trail, oldest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	var since *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	rows, err := s.db().Query(ctx, `
SELECT id, at, actor, action, cluster_id, target_id, details FROM (
    SELECT * FROM audit_events
    WHERE ($1 = '' OR cluster_id = $1) AND ($2::timestamptz IS NULL OR at >= $2) AND ($4 = '' OR target_id = $4)
    ORDER BY at DESC, id DESC LIMIT $3) x
ORDER BY at, id`, f.ClusterID, since, limit, f.TargetID)
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail: %w", err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByName[AuditEvent])
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail: %w", err)
	}
	return evs, nil
}

// AsUser runs f with a Store whose queries run in one transaction as the
// signed-in user: role authenticated with the verified JWT claims in
// request.jwt.claims, as Supabase's own API does. The database's policies
// and triggers are then the only access rules (docs/security.md, "People").
// It needs the Supabase roles (role authenticated and auth.uid()); the
// caller must have verified the claims.
func (s *Store) AsUser(ctx context.Context, claims map[string]any, f func(context.Context, *Store) error) error {
	b, err := json.Marshal(claims)
	if err != nil {
		return fmt.Errorf("encoding claims: %w", err)
	}
	return pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)`, string(b)); err != nil {
			return fmt.Errorf("acting as the signed-in user: %w (this needs Supabase's authenticated role)", err)
		}
		return f(ctx, &Store{pool: s.pool, q: tx, asUser: true})
	})
}

// ErrNoUserRole: this database cannot run queries as a signed-in user.
var ErrNoUserRole = errors.New("cannot act as a signed-in user")

// CheckAsUser checks that AsUser can work here: the role authenticated
// and auth.uid() exist (Supabase has them; on plain PostgreSQL migration
// the portal_users migration creates them) and this session may switch to the role.
func (s *Store) CheckAsUser(ctx context.Context) error {
	var role, uid, member bool
	var me string
	err := s.db().QueryRow(ctx, `SELECT current_user::text,
    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'),
    to_regprocedure('auth.uid()') IS NOT NULL,
    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND pg_has_role(current_user, 'authenticated', 'MEMBER')`).
		Scan(&me, &role, &uid, &member)
	if err != nil {
		return fmt.Errorf("checking the authenticated role: %w", err)
	}
	switch {
	case !role || !uid:
		return fmt.Errorf("the database has no role authenticated or no auth.uid(): run grape migrate as a role that may create roles (its portal_users migration adds them; see its warning): %w", ErrNoUserRole)
	case !member:
		return fmt.Errorf("role %s may not act as role authenticated: run GRANT authenticated TO %s as a superuser: %w", me, me, ErrNoUserRole)
	}
	return nil
}
