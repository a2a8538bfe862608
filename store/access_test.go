package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// try runs one statement inside a savepoint, so a refusal leaves the
// transaction usable for the next attempt.
func try(t *testing.T, tx pgx.Tx, sql string, args ...any) (int64, error) {
	t.Helper()
	ctx := t.Context()
	_, err := tx.Exec(ctx, "SAVEPOINT s")
	require.NoError(t, err)
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		_, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s")
		require.NoError(t, rbErr)
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// parked puts a fresh deployment of config c into awaiting_approval, as an
// agent would after its plan, requested by requester (a user's claims when
// requester is not uuid.Nil).
func (tn *tenancy) parked(t *testing.T, s seeded, name string, requester uuid.UUID) uuid.UUID {
	t.Helper()
	cfg, err := tn.admin.UpsertConfig(tn.ctx, s.cluster, name, json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	var id uuid.UUID
	if requester == uuid.Nil {
		d, err := tn.admin.Enqueue(tn.ctx, store.EnqueueParams{ClusterID: s.cluster, ConfigID: cfg.ID, RequireApproval: true, RequestedBy: "seed"})
		require.NoError(t, err)
		id = d.ID
	} else {
		tx, err := tn.pool.Begin(tn.ctx)
		require.NoError(t, err)
		_, err = tx.Exec(tn.ctx, `SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)`,
			fmt.Sprintf(`{"sub":%q,"role":"authenticated","email":"%s@example.com"}`, requester, requester.String()[:8]))
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(tn.ctx, `INSERT INTO deployments (config_id, cluster_id, action, require_approval) VALUES ($1, $2, 'apply', true) RETURNING id`,
			cfg.ID, s.cluster).Scan(&id))
		require.NoError(t, tx.Commit(tn.ctx))
	}
	_, err = tn.pool.Exec(tn.ctx, `UPDATE deployments SET status = 'awaiting_approval', phase = 'approval', claimed_by = 'agent',
    claimed_at = now(), started_at = now(), attempt = 1 WHERE id = $1`, id)
	require.NoError(t, err)
	return id
}

func userClaims(id uuid.UUID) map[string]any {
	return map[string]any{"sub": id.String(), "role": "authenticated", "email": id.String()[:8] + "@example.com"}
}

// TestRolesPerCluster: every role, every action, as the user writes SQL
// directly (what a Supabase client does).
func TestRolesPerCluster(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	require.NoError(t, tn.admin.SetFourEyes(ctx, x.cluster, false)) // roles here, four eyes below
	owner := uuid.New()
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, x.cluster, store.ClusterOwnership{OwnerID: &owner}))
	users := map[string]uuid.UUID{"owner": owner, "outsider": uuid.New()}
	for _, r := range store.Roles {
		users[string(r)] = uuid.New()
		_, err := tn.admin.SetMember(ctx, x.cluster, users[string(r)], r)
		require.NoError(t, err)
	}
	// A member of Y only, as admin there: nothing in X.
	_, err := tn.admin.SetMember(ctx, y.cluster, users["outsider"], store.RoleAdmin)
	require.NoError(t, err)

	type action struct {
		name string
		min  store.Role // "" : nobody
		do   func(t *testing.T, tx pgx.Tx) (int64, error)
	}
	actions := []action{
		{"read configs", store.RoleViewer, func(t *testing.T, tx pgx.Tx) (int64, error) {
			var n int64
			err := tx.QueryRow(ctx, `SELECT count(*) FROM configs WHERE cluster_id = $1`, x.cluster).Scan(&n)
			return n, err
		}},
		{"read audit", store.RoleViewer, func(t *testing.T, tx pgx.Tx) (int64, error) {
			var n int64
			err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE cluster_id = $1`, x.cluster).Scan(&n)
			return n, err
		}},
		{"read memberships", store.RoleViewer, func(t *testing.T, tx pgx.Tx) (int64, error) {
			var n int64
			err := tx.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE cluster_id = $1`, x.cluster).Scan(&n)
			return n, err
		}},
		{"queue a plan", store.RoleOperator, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `INSERT INTO deployments (config_id, cluster_id, action) VALUES ($1, $2, 'plan')`, x.prod.ID, x.cluster)
		}},
		{"cancel", store.RoleOperator, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE deployments SET cancel_requested_at = now() WHERE id = $1`, x.queued.ID)
		}},
		{"approve", store.RoleApprover, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, tn.parked(t, x, "gate-"+uuid.NewString()[:6], uuid.Nil))
		}},
		{"reject", store.RoleApprover, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE deployments SET rejected_at = now() WHERE id = $1`, tn.parked(t, x, "gate-"+uuid.NewString()[:6], uuid.Nil))
		}},
		{"edit a config", store.RoleAdmin, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE configs SET spec = '{"changed":1}', drift_schedule = 'off' WHERE id = $1`, x.stage.ID)
		}},
		{"create a config", store.RoleAdmin, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `INSERT INTO configs (cluster_id, name, spec) VALUES ($1, 'new', '{}')`, x.cluster)
		}},
		{"add a member", store.RoleAdmin, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `INSERT INTO memberships (cluster_id, user_id, role) VALUES ($1, $2, 'admin')`, x.cluster, uuid.New())
		}},
		{"turn four eyes on", store.RoleAdmin, func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE clusters SET four_eyes = true WHERE id = $1`, x.cluster)
		}},
		{"rewrite the audit trail", "", func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `UPDATE audit_events SET actor = 'nobody' WHERE cluster_id = $1`, x.cluster)
		}},
		{"delete the audit trail", "", func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `DELETE FROM audit_events WHERE cluster_id = $1`, x.cluster)
		}},
		{"forge an audit row", "", func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `INSERT INTO audit_events (actor, action, cluster_id) VALUES ('x', 'y', $1)`, x.cluster)
		}},
		{"queue a drift check", "", func(t *testing.T, tx pgx.Tx) (int64, error) {
			return try(t, tx, `INSERT INTO deployments (config_id, cluster_id, action) VALUES ($1, $2, 'drift')`, x.prod.ID, x.cluster)
		}},
	}
	who := []string{"viewer", "operator", "approver", "admin", "owner", "outsider"}
	for _, a := range actions {
		for _, name := range who {
			role := store.Role(name)
			if name == "owner" {
				role = store.RoleAdmin
			}
			want := a.min != "" && name != "outsider" && role.Allows(a.min)
			t.Run(a.name+"/"+name, func(t *testing.T) {
				tn.asUser(t, "authenticated", userClaims(users[name]), func(tx pgx.Tx) {
					n, err := a.do(t, tx)
					if want {
						require.NoError(t, err)
						require.Positive(t, n, "allowed, so it must do something")
					} else {
						require.True(t, err != nil || n == 0, "refused or no rows, got %d rows", n)
					}
				})
			})
		}
	}

	t.Run("grape_my_role", func(t *testing.T) {
		for _, name := range who {
			tn.asUser(t, "authenticated", userClaims(users[name]), func(tx pgx.Tx) {
				var r *string
				require.NoError(t, tx.QueryRow(ctx, `SELECT grape_my_role($1)`, x.cluster).Scan(&r))
				switch name {
				case "outsider":
					require.Nil(t, r)
				case "owner":
					require.Equal(t, "admin", *r)
				default:
					require.Equal(t, name, *r)
				}
			})
		}
		role, err := tn.admin.MyRole(ctx, x.cluster)
		require.NoError(t, err)
		require.Equal(t, store.RoleAdmin, role, "the tables' owner")
	})

	t.Run("a user of another cluster sees nothing", func(t *testing.T) {
		tn.asUser(t, "authenticated", userClaims(users["outsider"]), func(tx pgx.Tx) {
			v := visible(t, ctx, tx)
			for table, clusters := range v {
				require.NotContains(t, clusters, x.cluster, table)
			}
			for _, q := range []string{`SELECT count(*) FROM memberships WHERE cluster_id = $1`, `SELECT count(*) FROM audit_events WHERE cluster_id = $1`} {
				var n int
				require.NoError(t, tx.QueryRow(ctx, q, x.cluster).Scan(&n))
				require.Zero(t, n, q)
			}
		})
	})
}

// TestFourEyes: the requester cannot approve, whichever front end, unless
// the cluster turns the rule off; approvals record who.
func TestFourEyes(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x := tn.seed(t, "x")
	on, err := tn.admin.FourEyes(ctx, x.cluster)
	require.NoError(t, err)
	require.True(t, on, "on for new clusters")
	alice, bob := uuid.New(), uuid.New()
	for _, u := range []uuid.UUID{alice, bob} {
		_, err := tn.admin.SetMember(ctx, x.cluster, u, store.RoleApprover)
		require.NoError(t, err)
	}

	t.Run("browser user", func(t *testing.T) {
		id := tn.parked(t, x, "by-alice", alice)
		tn.asUser(t, "authenticated", userClaims(alice), func(tx pgx.Tx) {
			_, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, id)
			require.ErrorContains(t, err, "requested this deployment and cannot also approve it (four eyes)")
			requireRefused(t, err)
		})
		// Another claim value with the same subject is still Alice.
		tn.asUser(t, "authenticated", map[string]any{"sub": alice.String(), "email": "other@example.com"}, func(tx pgx.Tx) {
			_, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, id)
			requireRefused(t, err)
		})
		tn.asUser(t, "authenticated", userClaims(bob), func(tx pgx.Tx) {
			var by string
			var byUID uuid.UUID
			require.NoError(t, tx.QueryRow(ctx, `UPDATE deployments SET approved_at = now(), approved_by = 'forged' WHERE id = $1
RETURNING approved_by, approved_by_uid`, id).Scan(&by, &byUID))
			require.Equal(t, bob.String()[:8]+"@example.com", by)
			require.Equal(t, bob, byUID)
			// Who approved cannot be rewritten afterwards.
			require.NoError(t, tx.QueryRow(ctx, `UPDATE deployments SET approved_by = 'someone' WHERE id = $1
RETURNING approved_by`, id).Scan(&by))
			require.Equal(t, bob.String()[:8]+"@example.com", by)
		})
	})

	t.Run("CLI", func(t *testing.T) {
		id := tn.parked(t, x, "by-cli", uuid.Nil) // requested by "seed"
		_, err := tn.admin.Approve(ctx, id, "seed", "")
		require.ErrorIs(t, err, store.ErrForbidden)
		require.ErrorContains(t, err, "grape cluster set "+x.cluster+" --four-eyes off")
		d, err := tn.admin.GetDeployment(ctx, id)
		require.NoError(t, err)
		require.Nil(t, d.ApprovedAt)
		require.Equal(t, store.StatusAwaitingApproval, d.Status, "a refused approval leaves the plan waiting for someone else")

		require.NoError(t, tn.admin.SetFourEyes(ctx, x.cluster, false))
		d, err = tn.admin.Approve(ctx, id, "seed", "")
		require.NoError(t, err)
		require.Equal(t, "seed", *d.ApprovedBy)
	})
}

// TestAuditTrail: each action leaves a row naming who did it; nobody but the
// owner changes a row.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x := tn.seed(t, "x")
	require.NoError(t, tn.admin.SetFourEyes(ctx, x.cluster, false))
	admin := uuid.New()
	_, err := tn.admin.SetMember(ctx, x.cluster, admin, store.RoleAdmin)
	require.NoError(t, err)
	member := uuid.New()
	approve := tn.parked(t, x, "to-approve", uuid.Nil)
	reject := tn.parked(t, x, "to-reject", uuid.Nil)
	tn.asUser(t, "authenticated", userClaims(admin), func(tx pgx.Tx) {
		for _, q := range [][]any{
			{`UPDATE configs SET spec = '{"v":3}' WHERE id = $1`, x.prod.ID},
			{`INSERT INTO deployments (config_id, cluster_id, action) VALUES ($1, $2, 'plan')`, x.prod.ID, x.cluster},
			{`UPDATE deployments SET approved_at = now() WHERE id = $1`, approve},
			{`UPDATE deployments SET rejected_at = now() WHERE id = $1`, reject},
			{`UPDATE deployments SET cancel_requested_at = now() WHERE id = $1`, x.queued.ID},
			{`INSERT INTO memberships (cluster_id, user_id, role) VALUES ($1, $2, 'viewer')`, x.cluster, member},
			{`UPDATE memberships SET role = 'operator' WHERE user_id = $1`, member},
			{`DELETE FROM memberships WHERE user_id = $1`, member},
			{`UPDATE clusters SET four_eyes = true WHERE id = $1`, x.cluster},
		} {
			_, err := tx.Exec(ctx, q[0].(string), q[1:]...)
			require.NoError(t, err, q[0])
		}
		require.NoError(t, tx.Commit(ctx))
	})
	role, err := tn.admin.CreateAgentRole(ctx, x.cluster, store.AgentRoleOptions{})
	require.NoError(t, err)
	_, err = tn.admin.CreateAgentRole(ctx, x.cluster, store.AgentRoleOptions{RotatePassword: true})
	require.NoError(t, err)
	require.NoError(t, tn.admin.DropAgentRole(ctx, x.cluster))

	evs, err := tn.admin.ListAudit(ctx, store.AuditFilter{ClusterID: x.cluster})
	require.NoError(t, err)
	var got []string
	for _, e := range evs {
		got = append(got, e.Action+" by "+strings.Replace(e.Actor, admin.String(), "ADMIN", 1))
	}
	require.Equal(t, []string{
		"cluster.created by postgres",
		"config.created by postgres",
		"config.changed by postgres",
		"config.created by postgres",
		"deployment.queued by seed",
		"deployment.queued by seed",
		"cluster.changed by postgres",
		"membership.added by postgres",
		"config.created by postgres",
		"deployment.queued by seed",
		"config.created by postgres",
		"deployment.queued by seed",
		"config.changed by ADMIN",
		"deployment.queued by ADMIN",
		"deployment.approved by ADMIN",
		"deployment.rejected by ADMIN",
		"deployment.cancelled by ADMIN",
		"membership.added by ADMIN",
		"membership.changed by ADMIN",
		"membership.removed by ADMIN",
		"cluster.changed by ADMIN",
		"agent_role.created by postgres",
		"agent_role.rotated by postgres",
		"agent_role.revoked by postgres",
	}, got)
	for _, e := range evs {
		if e.Action == "config.changed" && strings.Contains(e.Actor, "-") {
			require.JSONEq(t, fmt.Sprintf(`{"name":"prod","version":3,"from_version":2,"email":%q}`, admin.String()[:8]+"@example.com"), string(e.Details))
		}
		if e.Action == "agent_role.created" {
			require.Equal(t, role.Name, *e.TargetID)
		}
	}

	for _, who := range []struct {
		role   string
		claims map[string]any
	}{{"authenticated", userClaims(admin)}, {"service_role", map[string]any{"role": "service_role"}}, {"anon", nil}} {
		tn.asUser(t, who.role, who.claims, func(tx pgx.Tx) {
			for _, q := range []string{`UPDATE audit_events SET actor = 'x'`, `DELETE FROM audit_events`, `TRUNCATE audit_events`} {
				n, err := try(t, tx, q)
				require.True(t, err != nil || n == 0, "%s: %s changed %d rows", who.role, q, n)
			}
		})
	}
	// Even a role granted UPDATE and DELETE outright is refused by the trigger.
	_, err = tn.pool.Exec(ctx, `GRANT UPDATE, DELETE ON audit_events TO service_role`)
	require.NoError(t, err)
	tn.asUser(t, "service_role", map[string]any{"role": "service_role"}, func(tx pgx.Tx) {
		_, err := try(t, tx, `DELETE FROM audit_events`)
		requireRefused(t, err)
		_, err = try(t, tx, `UPDATE audit_events SET actor = 'x'`)
		requireRefused(t, err)
	})
	// The owner is the one who can (retention, legal holds).
	tag, err := tn.pool.Exec(ctx, `DELETE FROM audit_events WHERE action = 'agent_role.revoked'`)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
}

// TestAgentForgedClaimsChangeNothing: an agent role that sets
// request.jwt.claims to a cluster owner's is still only an agent.
func TestAgentForgedClaimsChangeNothing(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	owner := uuid.New()
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, y.cluster, store.ClusterOwnership{OwnerID: &owner}))
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, x.cluster, store.ClusterOwnership{OwnerID: &owner}))
	before := tn.snapshot(t, y.cluster)
	_, poolX, _ := tn.agent(t, x.cluster)
	tx, err := poolX.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	claims, _ := json.Marshal(userClaims(owner))
	_, err = tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true), set_config('grape.actor', 'cli:root', true)`, string(claims))
	require.NoError(t, err)

	var role *string
	require.NoError(t, tx.QueryRow(ctx, `SELECT grape_my_role($1)`, y.cluster).Scan(&role))
	require.Nil(t, role)
	var n int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM clusters`).Scan(&n))
	require.Equal(t, 1, n, "still only its own cluster")
	for _, q := range []string{`SELECT * FROM memberships`, `SELECT * FROM audit_events`, `SET ROLE authenticated`} {
		_, err := try(t, tx, q)
		requireRefused(t, err, q)
	}
	_, err = try(t, tx, `INSERT INTO memberships (cluster_id, user_id, role) VALUES ($1, $2, 'admin')`, y.cluster, uuid.New())
	requireRefused(t, err)
	var requestedBy string
	require.NoError(t, tx.QueryRow(ctx, `INSERT INTO deployments (config_id, cluster_id, action, requested_by) VALUES ($1, $2, 'drift', 'drift')
RETURNING requested_by`, x.prod.ID, x.cluster).Scan(&requestedBy))
	require.Equal(t, "drift", requestedBy, "the forged user is not recorded as the requester")
	require.NoError(t, tx.Commit(ctx))

	evs, err := tn.admin.ListAudit(ctx, store.AuditFilter{ClusterID: x.cluster})
	require.NoError(t, err)
	last := evs[len(evs)-1]
	require.Equal(t, "deployment.queued", last.Action)
	require.Equal(t, "agent:"+store.AgentRoleName(x.cluster), last.Actor)
	require.Equal(t, before, tn.snapshot(t, y.cluster))
}

// TestIntentLimitsInTheDatabase: a row written directly gets the CLI's
// limits and messages.
func TestIntentLimitsInTheDatabase(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	x := tn.seed(t, "x")
	deep := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	big := `{"modules":{"vpc":{"x":"` + strings.Repeat("a", 5<<20) + `"}}}`
	for _, c := range []struct{ name, spec, err string }{
		{"32 levels", deep(32), ""},
		{"33 levels", deep(33), "invalid intent: intent: nested more than 32 levels deep; flatten the structure"},
		{"40 levels in an array", `{"a":` + strings.Repeat("[", 39) + strings.Repeat("]", 39) + "}", "nested more than 32 levels deep"},
		{"5 MB", big, "the limit is 1048576 (1 MiB): keep only what differs from the module defaults"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := tn.pool.Exec(tn.ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ($1, $2, $3)`,
				x.cluster, "c"+uuid.NewString()[:6], c.spec)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.err)
			_, err = tn.pool.Exec(tn.ctx, `UPDATE configs SET spec = $2 WHERE id = $1`, x.prod.ID, c.spec)
			require.ErrorContains(t, err, c.err)
		})
	}
}

// TestWebhookSecretsStayInTheirCluster: a target's signing secret is read by
// its cluster's agents (they sign with it) and nobody else.
func TestWebhookSecretsStayInTheirCluster(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	_, secret, err := tn.admin.AddNotifyTarget(ctx, store.NotifyTarget{ClusterID: x.cluster, URL: "https://hooks.example.com/x", Format: "json"})
	require.NoError(t, err)
	_, poolX, _ := tn.agent(t, x.cluster)
	_, poolY, _ := tn.agent(t, y.cluster)
	var got string
	require.NoError(t, poolX.QueryRow(ctx, `SELECT secret FROM notify_targets`).Scan(&got))
	require.Equal(t, secret, got, "X's agents sign with it")
	var n int
	require.NoError(t, poolY.QueryRow(ctx, `SELECT count(*) FROM notify_targets`).Scan(&n))
	require.Zero(t, n, "Y's agents do not see X's targets")
	asY := store.New(poolY)
	ns, err := asY.ClaimNotifications(ctx, x.cluster, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, ns)

	admin := uuid.New()
	_, err = tn.admin.SetMember(ctx, x.cluster, admin, store.RoleAdmin)
	require.NoError(t, err)
	tn.asUser(t, "authenticated", userClaims(admin), func(tx pgx.Tx) {
		var url string
		require.NoError(t, tx.QueryRow(ctx, `SELECT url FROM notify_targets`).Scan(&url))
		_, err := try(t, tx, `SELECT secret FROM notify_targets`)
		requireRefused(t, err, "not even an admin reads the secret")
		_, err = try(t, tx, `INSERT INTO notify_outbox (target_id, cluster_id, event, payload) SELECT id, cluster_id, 'x', '{}' FROM notify_targets`)
		requireRefused(t, err)
	})
}

// TestLongWaitsSweptByTheirClusterOnly: an agent announces its own
// cluster's long waits, once however often it (or another agent) sweeps;
// another cluster's agent and Supabase users may not sweep at all.
func TestLongWaitsSweptByTheirClusterOnly(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	_, err := tn.pool.Exec(ctx, `UPDATE deployments SET created_at = now() - interval '2 hours' WHERE id = $1`, x.queued.ID)
	require.NoError(t, err)
	asX, _, _ := tn.agent(t, x.cluster)
	asY, _, _ := tn.agent(t, y.cluster)

	_, err = asY.NoteLongWaits(ctx, x.cluster, time.Hour)
	requireRefused(t, err, "another cluster's agent")
	ws, err := asX.NoteLongWaits(ctx, x.cluster, time.Hour)
	require.NoError(t, err)
	require.Len(t, ws, 1)
	require.Equal(t, x.queued.ID, ws[0].DeploymentID)
	require.Equal(t, store.WaitQueued, ws[0].Reason)
	require.Nil(t, ws[0].BlockedBy, "stage has nothing running")
	ws, err = asX.NoteLongWaits(ctx, x.cluster, time.Hour)
	require.NoError(t, err)
	require.Empty(t, ws, "announced once")

	tn.asUser(t, "authenticated", userClaims(uuid.New()), func(tx pgx.Tx) {
		_, err := try(t, tx, `SELECT * FROM grape_note_long_waits($1, interval '1 minute')`, x.cluster)
		requireRefused(t, err)
		_, err = try(t, tx, `SELECT * FROM deployment_wait_notices`)
		requireRefused(t, err)
	})
}

// TestStoreAsUser: the store's own methods, run as a user, obey the user's
// role: the building block for a front end that acts as its user.
func TestStoreAsUser(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	viewer, operator := uuid.New(), uuid.New()
	_, err := tn.admin.SetMember(ctx, x.cluster, viewer, store.RoleViewer)
	require.NoError(t, err)
	_, err = tn.admin.SetMember(ctx, x.cluster, operator, store.RoleOperator)
	require.NoError(t, err)

	require.NoError(t, tn.admin.AsUser(ctx, userClaims(viewer), func(ctx context.Context, st *store.Store) error {
		cs, err := st.ListClusters(ctx)
		require.NoError(t, err)
		require.Len(t, cs, 1)
		require.Equal(t, x.cluster, cs[0].ID)
		role, err := st.MyRole(ctx, x.cluster)
		require.NoError(t, err)
		require.Equal(t, store.RoleViewer, role)
		role, err = st.MyRole(ctx, y.cluster)
		require.NoError(t, err)
		require.Empty(t, role)
		return nil
	}))
	err = tn.admin.AsUser(ctx, userClaims(viewer), func(ctx context.Context, st *store.Store) error {
		_, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: x.cluster, ConfigID: x.prod.ID, Action: store.ActionPlan})
		return err
	})
	requireRefused(t, err, "a viewer cannot queue")
	require.NoError(t, tn.admin.AsUser(ctx, userClaims(operator), func(ctx context.Context, st *store.Store) error {
		d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: x.cluster, ConfigID: x.prod.ID, Action: store.ActionPlan, RequestedBy: "forged"})
		require.NoError(t, err)
		require.Equal(t, operator.String()[:8]+"@example.com", d.RequestedBy)
		return nil
	}))
}

// applied runs an apply of cfg to success at commit sha, as an agent would.
func (tn *tenancy) applied(t *testing.T, s seeded, cfg store.Config, sha string) {
	t.Helper()
	d, err := tn.admin.Enqueue(tn.ctx, store.EnqueueParams{ClusterID: s.cluster, ConfigID: cfg.ID, RequestedBy: "seed"})
	require.NoError(t, err)
	_, err = tn.admin.ClaimByID(tn.ctx, d.ID, s.agentID, time.Minute)
	require.NoError(t, err)
	require.NoError(t, tn.admin.SetCommit(tn.ctx, d.ID, s.agentID, sha))
	require.NoError(t, tn.admin.Finish(tn.ctx, d.ID, s.agentID, store.Outcome{Status: store.StatusSucceeded}))
}

// TestStoreDecisionsAsUser: approve, reject and cancel through the store as
// each role, on plain PostgreSQL (the portal_users migration gives it the user rules): the
// database decides, and the store types its answer.
func TestStoreDecisionsAsUser(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	users := map[store.Role]uuid.UUID{}
	for _, r := range store.Roles {
		users[r] = uuid.New()
		_, err := tn.admin.SetMember(ctx, x.cluster, users[r], r)
		require.NoError(t, err)
	}
	as := func(u uuid.UUID, f func(context.Context, *store.Store) error) error {
		return tn.admin.AsUser(ctx, userClaims(u), f)
	}
	decide := func(u uuid.UUID, what string, id uuid.UUID) error {
		return as(u, func(ctx context.Context, st *store.Store) error {
			var err error
			switch what {
			case "approve":
				_, err = st.Approve(ctx, id, "forged", "looks right")
			case "reject":
				_, err = st.Reject(ctx, id, "forged", "no")
			case "cancel":
				_, err = st.RequestCancel(ctx, id, "forged")
			}
			return err
		})
	}

	for _, tc := range []struct {
		role  store.Role
		what  string
		allow bool
	}{
		{store.RoleViewer, "approve", false}, {store.RoleViewer, "reject", false}, {store.RoleViewer, "cancel", false},
		{store.RoleOperator, "approve", false}, {store.RoleOperator, "reject", false}, {store.RoleOperator, "cancel", true},
		{store.RoleApprover, "approve", true}, {store.RoleApprover, "reject", true}, {store.RoleApprover, "cancel", true},
	} {
		id := tn.parked(t, x, fmt.Sprintf("%s-%s", tc.role, tc.what), uuid.Nil)
		err := decide(users[tc.role], tc.what, id)
		if !tc.allow {
			require.ErrorIs(t, err, store.ErrForbidden, "%s %s", tc.role, tc.what)
			require.Contains(t, err.Error(), "ask an admin of the cluster", "%s %s: the refusal says what to do", tc.role, tc.what)
			continue
		}
		require.NoError(t, err, "%s %s", tc.role, tc.what)
		d, err := tn.admin.GetDeployment(ctx, id)
		require.NoError(t, err)
		who := users[tc.role].String()[:8] + "@example.com"
		switch tc.what {
		case "approve":
			require.Equal(t, who, deref(d.ApprovedBy), "the database records the user, not what the caller claims")
			require.Equal(t, "looks right", deref(d.ReviewComment))
		case "reject":
			require.Equal(t, store.StatusCancelled, d.Status)
			require.Equal(t, "no", deref(d.ReviewComment))
		case "cancel":
			require.Equal(t, store.StatusCancelled, d.Status)
			require.Equal(t, who, deref(d.CancelRequestedBy))
		}
		lines, err := tn.admin.ReadLogs(ctx, id, 0, 10)
		require.NoError(t, err)
		if tc.what != "approve" {
			require.NotEmpty(t, lines, "the trigger logs the end of the run")
			require.Contains(t, lines[len(lines)-1].Line, who)
		}
	}

	// A finished run: the state, not the role, refuses.
	id := tn.parked(t, x, "twice", uuid.Nil)
	require.NoError(t, decide(users[store.RoleApprover], "reject", id))
	require.ErrorIs(t, decide(users[store.RoleApprover], "approve", id), store.ErrWrongState)
	require.ErrorIs(t, decide(users[store.RoleApprover], "cancel", id), store.ErrWrongState)

	// Four eyes: on for this cluster, the requester cannot approve.
	require.NoError(t, tn.admin.SetFourEyes(ctx, x.cluster, true))
	own := tn.parked(t, x, "own", users[store.RoleApprover])
	err := decide(users[store.RoleApprover], "approve", own)
	require.ErrorIs(t, err, store.ErrForbidden)
	require.Contains(t, err.Error(), "four eyes")
	require.NoError(t, decide(users[store.RoleAdmin], "approve", own), "another approver may")

	// Another cluster's run: not found, not forbidden (nothing leaks).
	other := tn.parked(t, y, "theirs", uuid.Nil)
	require.ErrorIs(t, decide(users[store.RoleAdmin], "approve", other), store.ErrNotFound)
}

// TestQueueAtCommitAsUser: retrying a remediation and checking for drift
// name a source_commit, which a user's INSERT may not; the store goes
// through grape_queue_at_commit, which wants an operator and the config's
// last applied commit.
func TestQueueAtCommitAsUser(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	ctx := tn.ctx
	x, y := tn.seed(t, "x"), tn.seed(t, "y")
	viewer, operator := uuid.New(), uuid.New()
	_, err := tn.admin.SetMember(ctx, x.cluster, viewer, store.RoleViewer)
	require.NoError(t, err)
	_, err = tn.admin.SetMember(ctx, x.cluster, operator, store.RoleOperator)
	require.NoError(t, err)
	cfg, err := tn.admin.UpsertConfig(ctx, x.cluster, "net", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	old, current := strings.Repeat("a", 40), strings.Repeat("b", 40)
	tn.applied(t, x, cfg, old)
	tn.applied(t, x, cfg, current)
	theirs, err := tn.admin.UpsertConfig(ctx, y.cluster, "net", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	tn.applied(t, y, theirs, current)

	queue := func(u uuid.UUID, c store.Config, action store.Action, sha string) (store.Deployment, error) {
		var d store.Deployment
		err := tn.admin.AsUser(ctx, userClaims(u), func(ctx context.Context, st *store.Store) error {
			var err error
			d, err = st.Enqueue(ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: action,
				SourceCommit: &sha, RequestedBy: "forged", MaxAttempts: 1})
			return err
		})
		return d, err
	}
	_, err = queue(viewer, cfg, store.ActionDrift, current)
	require.ErrorIs(t, err, store.ErrForbidden, "a viewer cannot check")
	_, err = queue(operator, cfg, store.ActionApply, old)
	require.ErrorIs(t, err, store.ErrWrongState, "an older commit would roll back")
	require.Contains(t, err.Error(), "last applied commit")
	_, err = queue(operator, theirs, store.ActionDrift, current)
	require.ErrorIs(t, err, store.ErrNotFound, "another cluster's config")
	_, err = queue(operator, cfg, store.ActionDestroy, current)
	require.ErrorIs(t, err, store.ErrWrongState)

	d, err := queue(operator, cfg, store.ActionDrift, current)
	require.NoError(t, err)
	require.Equal(t, store.ActionDrift, d.Action)
	require.Equal(t, current, deref(d.SourceCommit))
	require.Equal(t, operator.String()[:8]+"@example.com", d.RequestedBy)
	r, err := queue(operator, cfg, store.ActionApply, current)
	require.NoError(t, err, "a remediation (or its retry) of the applied commit")
	require.Equal(t, current, deref(r.SourceCommit))

	evs, err := tn.admin.ListAudit(ctx, store.AuditFilter{TargetID: r.ID.String()})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, operator.String(), evs[0].Actor, "audited as the user")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
