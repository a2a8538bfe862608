package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// tenancy is a fresh database, shaped like Supabase or like plain
// PostgreSQL, migrated by its owner (the superuser here).
type tenancy struct {
	ctx      context.Context
	adminURL string
	pool     *pgxpool.Pool
	admin    *store.Store
}

type flavour int

const (
	plainPostgres flavour = iota
	supabase              // anon, authenticated, service_role, auth.uid(), Supabase's default grants
	rolesNoAuth           // the API roles exist but auth.uid() does not
)

func newTenancy(t *testing.T, f flavour) *tenancy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	url := testsupport.EmptyDatabaseURL(t)
	pool := testsupport.Pool(t, url)
	switch f {
	case supabase:
		emulation, err := os.ReadFile(filepath.Join("testdata", "supabase_emulation.sql"))
		require.NoError(t, err)
		_, err = pool.Exec(ctx, string(emulation), pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err, "emulating Supabase")
	case rolesNoAuth:
		emulation, err := os.ReadFile(filepath.Join("testdata", "supabase_emulation.sql"))
		require.NoError(t, err)
		roles, _, _ := strings.Cut(string(emulation), "CREATE SCHEMA IF NOT EXISTS auth;")
		_, err = pool.Exec(ctx, roles, pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err, "creating the Supabase roles")
	}
	_, err := store.Migrate(ctx, pool)
	require.NoError(t, err)
	return &tenancy{ctx: ctx, adminURL: url, pool: pool, admin: store.New(pool)}
}

// uniqueCluster returns a cluster id unique on the server: agent roles are
// server-wide objects, shared by the parallel tests' databases.
func uniqueCluster(prefix string) string {
	return prefix + "-" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
}

// seeded is one cluster with a row in every table.
type seeded struct {
	cluster  string
	prod     store.Config // has a running deployment
	stage    store.Config // has a queued deployment
	running  store.Deployment
	queued   store.Deployment
	agentID  string
	driftID  uuid.UUID
	logLines int
}

func (tn *tenancy) seed(t *testing.T, prefix string) seeded {
	t.Helper()
	s := seeded{cluster: uniqueCluster(prefix)}
	_, err := tn.admin.CreateCluster(tn.ctx, s.cluster, "cluster "+prefix)
	require.NoError(t, err)
	s.prod, err = tn.admin.UpsertConfig(tn.ctx, s.cluster, "prod", json.RawMessage(`{"modules":{"vpc":{}}}`), store.ConfigSettings{})
	require.NoError(t, err)
	s.prod, err = tn.admin.UpsertConfig(tn.ctx, s.cluster, "prod", json.RawMessage(`{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`), store.ConfigSettings{})
	require.NoError(t, err) // two versions of history
	s.stage, err = tn.admin.UpsertConfig(tn.ctx, s.cluster, "stage", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)
	s.agentID = "host-" + s.cluster
	require.NoError(t, tn.admin.RegisterAgent(tn.ctx, store.Agent{ID: s.agentID, ClusterID: s.cluster, Hostname: "h", Version: "v"}))
	_, err = tn.admin.Enqueue(tn.ctx, store.EnqueueParams{ClusterID: s.cluster, ConfigID: s.prod.ID, RequestedBy: "seed"})
	require.NoError(t, err)
	s.running, err = tn.admin.Claim(tn.ctx, s.cluster, s.agentID, time.Minute)
	require.NoError(t, err)
	s.queued, err = tn.admin.Enqueue(tn.ctx, store.EnqueueParams{ClusterID: s.cluster, ConfigID: s.stage.ID, RequestedBy: "seed"})
	require.NoError(t, err)
	s.logLines = 3
	n, err := tn.admin.AppendLogs(tn.ctx, s.running.ID, []int64{1, 2, 3},
		[]store.Stream{store.StreamAgent, store.StreamStdout, store.StreamStderr},
		[]string{"claimed", "Plan: 1 to add", "warning"}, []time.Time{time.Now(), time.Now(), time.Now()})
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	require.NoError(t, tn.pool.QueryRow(tn.ctx, `INSERT INTO drift_reports (config_id, cluster_id, deployment_id, status)
VALUES ($1, $2, $3, 'in_sync') RETURNING id`, s.prod.ID, s.cluster, s.running.ID).Scan(&s.driftID))
	return s
}

// snapshot is every row of a cluster, as the owner sees it, for "nothing
// changed" checks.
func (tn *tenancy) snapshot(t *testing.T, cluster string) map[string]string {
	t.Helper()
	queries := map[string]string{
		"clusters":          `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM clusters x WHERE x.id = $1`,
		"agents":            `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM agents x WHERE x.cluster_id = $1`,
		"configs":           `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM configs x WHERE x.cluster_id = $1`,
		"config_versions":   `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.config_id, x.version) FROM config_versions x JOIN configs c ON c.id = x.config_id WHERE c.cluster_id = $1`,
		"deployments":       `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM deployments x WHERE x.cluster_id = $1`,
		"deployment_logs":   `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.deployment_id, x.seq) FROM deployment_logs x JOIN deployments d ON d.id = x.deployment_id WHERE d.cluster_id = $1`,
		"drift_reports":     `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM drift_reports x WHERE x.cluster_id = $1`,
		"grape_agent_roles": `SELECT jsonb_agg(to_jsonb(x) ORDER BY x.role_name) FROM grape_agent_roles x WHERE x.cluster_id = $1`,
	}
	out := map[string]string{}
	for table, q := range queries {
		var s *string
		require.NoError(t, tn.pool.QueryRow(tn.ctx, q, cluster).Scan(&s), table)
		if s != nil {
			out[table] = *s
		}
	}
	return out
}

// agent creates the cluster's agent role and connects as it, with the
// password, over TCP as a real agent would. The role is dropped at the end.
func (tn *tenancy) agent(t *testing.T, cluster string) (*store.Store, *pgxpool.Pool, string) {
	t.Helper()
	role, err := tn.admin.CreateAgentRole(tn.ctx, cluster, store.AgentRoleOptions{})
	require.NoError(t, err)
	require.True(t, role.Created)
	require.NotEmpty(t, role.Password)
	t.Cleanup(func() {
		if err := tn.admin.DropAgentRole(context.Background(), cluster); err != nil {
			t.Logf("dropping agent role of %s: %v", cluster, err)
		}
	})
	url, err := store.AgentURL(tn.adminURL, role.Name, role.Password)
	require.NoError(t, err)
	pool := testsupport.Pool(t, url)
	var who string
	require.NoError(t, pool.QueryRow(tn.ctx, `SELECT current_user`).Scan(&who))
	require.Equal(t, role.Name, who)
	return store.New(pool), pool, url
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// requireRefused: PostgreSQL said no, on privilege grounds (a grant or a
// row-level security policy), not some incidental failure.
func requireRefused(t *testing.T, err error, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.True(t, store.Forbidden(err), "want SQLSTATE 42501, got %v", err)
}

// The logstream's retry statement, repeated here so the policy is tested on
// exactly what the agent sends.
const insertIgnoringDuplicates = `INSERT INTO deployment_logs (deployment_id, seq, stream, line, created_at)
SELECT $1, u.seq, u.stream, u.line, u.created_at
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[]) AS u(seq, stream, line, created_at)
ON CONFLICT (deployment_id, seq) DO NOTHING`

// appendAgentLine is store's rescue/CLI note, as the agent's session sends it.
const appendAgentLine = `INSERT INTO deployment_logs (deployment_id, seq, stream, line)
SELECT $1, coalesce(max(seq), 0) + 1, 'agent', $2 FROM deployment_logs WHERE deployment_id = $1`

func logBatch(first, n int) (seqs []int64, streams []string, lines []string, created []time.Time) {
	for i := first; i < first+n; i++ {
		seqs = append(seqs, int64(i))
		streams = append(streams, "stdout")
		lines = append(lines, fmt.Sprintf("line %d", i))
		created = append(created, time.Now())
	}
	return
}

func appendLogs(ctx context.Context, st *store.Store, id uuid.UUID, first, n int) (int64, error) {
	seqs, streams, lines, created := logBatch(first, n)
	ss := make([]store.Stream, len(streams))
	for i, s := range streams {
		ss[i] = store.Stream(s)
	}
	return st.AppendLogs(ctx, id, seqs, ss, lines, created)
}

func copyLogs(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, first, n int) (int64, error) {
	seqs, streams, lines, created := logBatch(first, n)
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{id, seqs[i], streams[i], lines[i], created[i]}
	}
	return pool.CopyFrom(ctx, pgx.Identifier{"deployment_logs"}, []string{"deployment_id", "seq", "stream", "line", "created_at"}, pgx.CopyFromRows(rows))
}

// TestAgentCannotReachAnotherCluster is agent A's credential in an
// attacker's hands: every read, claim, update, log line and drift report
// aimed at cluster B returns nothing or is refused, and B's rows are
// byte-for-byte what they were.
func TestAgentCannotReachAnotherCluster(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	asA, pool, _ := tn.agent(t, a.cluster)
	ctx := tn.ctx
	// B's running deployment has an expired lease: a rescuer of B would act.
	_, err := tn.pool.Exec(ctx, `UPDATE deployments SET lease_expires_at = now() - interval '1 minute' WHERE id = $1`, b.running.ID)
	require.NoError(t, err)
	before := tn.snapshot(t, b.cluster)
	lease := time.Minute

	attacks := []struct {
		name string
		try  func(t *testing.T)
	}{
		{"list clusters", func(t *testing.T) {
			cs, err := asA.ListClusters(ctx)
			require.NoError(t, err)
			require.Len(t, cs, 1)
			require.Equal(t, a.cluster, cs[0].ID)
		}},
		{"read cluster B", func(t *testing.T) {
			_, err := asA.GetCluster(ctx, b.cluster)
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"list every config", func(t *testing.T) {
			cs, err := asA.ListConfigs(ctx, "")
			require.NoError(t, err)
			require.Len(t, cs, 2)
			for _, c := range cs {
				require.Equal(t, a.cluster, c.ClusterID)
			}
		}},
		{"read B's config by id and by name", func(t *testing.T) {
			_, err := asA.GetConfigByID(ctx, b.prod.ID)
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = asA.GetConfig(ctx, b.cluster, "prod")
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"read B's config history", func(t *testing.T) {
			h, err := asA.ConfigHistory(ctx, b.prod.ID)
			require.NoError(t, err)
			require.Empty(t, h)
			_, err = asA.ConfigAtVersion(ctx, b.prod.ID, 1)
			require.ErrorIs(t, err, store.ErrNotFound)
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM config_versions`).Scan(&n))
			require.Equal(t, 3, n, "A's own two configs have three versions")
		}},
		{"list deployments", func(t *testing.T) {
			// Statuses spelled out: with none, ListDeployments' cardinality(NULL)
			// filter currently matches nothing for anyone (reported to the lead).
			all := []store.Status{store.StatusQueued, store.StatusInProgress, store.StatusAwaitingApproval,
				store.StatusSucceeded, store.StatusFailed, store.StatusCancelled}
			ds, err := asA.ListDeployments(ctx, store.ListFilter{Statuses: all})
			require.NoError(t, err)
			require.Len(t, ds, 2)
			ds, err = asA.ListDeployments(ctx, store.ListFilter{ClusterID: b.cluster, Statuses: all})
			require.NoError(t, err)
			require.Empty(t, ds)
		}},
		{"read B's deployment", func(t *testing.T) {
			_, err := asA.GetDeployment(ctx, b.running.ID)
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"read B's logs", func(t *testing.T) {
			lines, err := asA.ReadLogs(ctx, b.running.ID, 0, 100)
			require.NoError(t, err)
			require.Empty(t, lines)
			seq, err := asA.LastSeq(ctx, b.running.ID)
			require.NoError(t, err)
			require.Zero(t, seq)
		}},
		{"read B's drift reports and agents", func(t *testing.T) {
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM drift_reports WHERE cluster_id <> $1`, a.cluster).Scan(&n))
			require.Zero(t, n)
			agents, err := asA.ListAgents(ctx, b.cluster)
			require.NoError(t, err)
			require.Empty(t, agents)
		}},
		{"read the role map", func(t *testing.T) {
			_, err := pool.Exec(ctx, `SELECT * FROM grape_agent_roles`)
			requireRefused(t, err)
		}},
		{"claim B's queued deployment", func(t *testing.T) {
			_, err := asA.Claim(ctx, b.cluster, "thief", lease)
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"heartbeat B's running deployment", func(t *testing.T) {
			_, err := asA.Heartbeat(ctx, b.running.ID, b.agentID, lease)
			require.ErrorIs(t, err, store.ErrLeaseLost)
		}},
		{"record phase, commit, plan, outputs, cost on B's deployment", func(t *testing.T) {
			id := b.running.ID
			require.ErrorIs(t, asA.SetPhase(ctx, id, b.agentID, store.PhaseApply), store.ErrLeaseLost)
			require.ErrorIs(t, asA.SetCommit(ctx, id, b.agentID, strings.Repeat("a", 40)), store.ErrLeaseLost)
			require.ErrorIs(t, asA.SetPlanSummary(ctx, id, b.agentID, map[string]int{"add": 1}), store.ErrLeaseLost)
			require.ErrorIs(t, asA.SetOutputs(ctx, id, b.agentID, map[string]string{"x": "y"}), store.ErrLeaseLost)
			require.ErrorIs(t, asA.SetCost(ctx, id, b.agentID, map[string]int{"usd": 1}), store.ErrLeaseLost)
		}},
		{"finish B's deployment", func(t *testing.T) {
			err := asA.Finish(ctx, b.running.ID, b.agentID, store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: "x"})
			require.ErrorIs(t, err, store.ErrLeaseLost)
		}},
		{"finish B's and claim B's next", func(t *testing.T) {
			next, finishErr, err := asA.FinishAndClaim(ctx, b.running.ID, b.agentID, store.Outcome{Status: store.StatusSucceeded}, b.cluster, lease)
			require.NoError(t, err)
			require.ErrorIs(t, finishErr, store.ErrLeaseLost)
			require.Nil(t, next)
		}},
		{"park B's deployment for approval", func(t *testing.T) {
			require.ErrorIs(t, asA.AwaitApproval(ctx, b.running.ID, b.agentID), store.ErrLeaseLost)
		}},
		{"rescue B's expired lease", func(t *testing.T) {
			rescued, err := asA.RescueExpired(ctx, b.cluster, time.Minute)
			require.NoError(t, err)
			require.Empty(t, rescued)
		}},
		{"update B's deployments directly", func(t *testing.T) {
			tag, err := pool.Exec(ctx, `UPDATE deployments SET status = 'failed', finished_at = now(), error = 'pwned' WHERE cluster_id = $1`, b.cluster)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected())
		}},
		{"move A's deployment into B", func(t *testing.T) {
			_, err := pool.Exec(ctx, `UPDATE deployments SET cluster_id = $1 WHERE cluster_id = $2`, b.cluster, a.cluster)
			requireRefused(t, err)
		}},
		{"delete B's rows", func(t *testing.T) {
			for _, table := range []string{"deployments", "deployment_logs", "drift_reports", "agents", "configs", "clusters"} {
				_, err := pool.Exec(ctx, `DELETE FROM `+table)
				requireRefused(t, err, table)
			}
		}},
		{"request cancel or approve B's deployment", func(t *testing.T) {
			_, err := pool.Exec(ctx, `UPDATE deployments SET cancel_requested_at = now() WHERE id = $1`, b.running.ID)
			requireRefused(t, err)
			_, err = pool.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, b.running.ID)
			requireRefused(t, err)
		}},
		{"COPY log lines into B's deployment", func(t *testing.T) {
			_, err := copyLogs(ctx, pool, b.running.ID, 100, 10)
			require.Error(t, err)
			require.Equal(t, "0A000", sqlState(err), "PostgreSQL refuses COPY FROM under RLS: %v", err)
		}},
		{"INSERT … ON CONFLICT log lines into B's deployment", func(t *testing.T) {
			seqs, streams, lines, created := logBatch(100, 10)
			_, err := pool.Exec(ctx, insertIgnoringDuplicates, b.running.ID, seqs, streams, lines, created)
			requireRefused(t, err)
		}},
		{"append log lines to B's deployment through grape_append_logs", func(t *testing.T) {
			_, err := appendLogs(ctx, asA, b.running.ID, 100, 10)
			requireRefused(t, err)
			require.NotContains(t, err.Error(), string(store.StatusInProgress), "must not reveal B's deployment state")
		}},
		{"append a note to B's deployment", func(t *testing.T) {
			_, err := pool.Exec(ctx, appendAgentLine, b.running.ID, "note")
			requireRefused(t, err)
		}},
		{"drift report on B's config", func(t *testing.T) {
			_, err := pool.Exec(ctx, `INSERT INTO drift_reports (config_id, cluster_id, status) VALUES ($1, $2, 'drifted')`, b.prod.ID, b.cluster)
			requireRefused(t, err)
			_, err = pool.Exec(ctx, `INSERT INTO drift_reports (config_id, cluster_id, status) VALUES ($1, $2, 'drifted')`, b.prod.ID, a.cluster)
			require.Equal(t, "23503", sqlState(err), "config of B under A's cluster: %v", err)
			_, err = pool.Exec(ctx, `INSERT INTO drift_reports (config_id, cluster_id, deployment_id, status) VALUES ($1, $2, $3, 'drifted')`, a.prod.ID, a.cluster, b.running.ID)
			requireRefused(t, err, "A's config pointing at B's deployment")
		}},
		{"queue a deployment of B's config", func(t *testing.T) {
			_, err := asA.Enqueue(ctx, store.EnqueueParams{ClusterID: b.cluster, ConfigID: b.prod.ID})
			require.Error(t, err)
			_, err = asA.Enqueue(ctx, store.EnqueueParams{ClusterID: a.cluster, ConfigID: b.prod.ID})
			require.Error(t, err)
		}},
		{"register an agent in B", func(t *testing.T) {
			err := asA.RegisterAgent(ctx, store.Agent{ID: "spy", ClusterID: b.cluster})
			requireRefused(t, err)
		}},
		{"take over B's agent row", func(t *testing.T) {
			err := asA.RegisterAgent(ctx, store.Agent{ID: b.agentID, ClusterID: a.cluster})
			requireRefused(t, err)
		}},
		{"heartbeat or stop B's agent", func(t *testing.T) {
			require.NoError(t, asA.AgentHeartbeat(ctx, b.agentID)) // silently matches no row
			require.NoError(t, asA.AgentStopped(ctx, b.agentID))
		}},
		{"map itself to B", func(t *testing.T) {
			_, err := pool.Exec(ctx, `UPDATE grape_agent_roles SET cluster_id = $1`, b.cluster)
			requireRefused(t, err)
			_, err = pool.Exec(ctx, `INSERT INTO grape_agent_roles (role_name, cluster_id) VALUES (current_user, $1)`, b.cluster)
			requireRefused(t, err)
		}},
	}
	for _, at := range attacks {
		t.Run(at.name, at.try)
	}
	require.Equal(t, before, tn.snapshot(t, b.cluster), "cluster B's rows changed")
}

// TestAgentCannotChangeConfigsOrSchema: the intent and the schema are out of
// an agent's reach even in its own cluster.
func TestAgentCannotChangeConfigsOrSchema(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	asA, pool, agentURL := tn.agent(t, a.cluster)
	ctx := tn.ctx
	before := tn.snapshot(t, a.cluster)

	_, err := asA.UpsertConfig(ctx, a.cluster, "prod", json.RawMessage(`{"modules":{}}`), store.ConfigSettings{})
	requireRefused(t, err)
	for _, stmt := range []string{
		`UPDATE configs SET spec = '{}'`,
		`UPDATE configs SET require_approval = false`,
		`INSERT INTO configs (cluster_id, name, spec) VALUES ('` + a.cluster + `', 'new', '{}')`,
		`INSERT INTO config_versions (config_id, version, spec, require_approval, auto_remediate) VALUES ('` + a.prod.ID.String() + `', 9, '{}', false, false)`,
		`INSERT INTO clusters (id) VALUES ('` + uniqueCluster("new") + `')`,
		`UPDATE clusters SET owner_id = gen_random_uuid()`,
		`UPDATE deployments SET action = 'destroy'`,
		`UPDATE deployments SET config_id = '` + a.stage.ID.String() + `'`,
		`CREATE TABLE evil (x int)`,
		`CREATE SCHEMA evil`,
		`CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
		`ALTER TABLE deployments DISABLE ROW LEVEL SECURITY`,
		`ALTER TABLE deployments ADD COLUMN evil int`,
		`DROP POLICY agent_read ON clusters`,
		`CREATE POLICY evil ON deployments FOR SELECT USING (true)`,
		`ALTER FUNCTION grape_agent_cluster() RENAME TO evil`,
		`TRUNCATE deployment_logs`,
		`CREATE ROLE evil`,
	} {
		_, err := pool.Exec(ctx, stmt)
		require.Error(t, err, stmt)
		require.Contains(t, []string{"42501", "42P01"}, sqlState(err), "%s: %v", stmt, err)
	}
	_, err = asA.CreateAgentRole(ctx, b.cluster, store.AgentRoleOptions{})
	require.Error(t, err, "an agent role cannot mint roles")

	// B's history is invisible even by id.
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM config_versions WHERE config_id = $1`, b.prod.ID).Scan(&n))
	require.Zero(t, n)

	// A temp table named like a Grape table shadows it in the agent's own
	// session only; the SECURITY DEFINER functions put pg_temp last and
	// still read the real one.
	conn, err := pgx.Connect(ctx, agentURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TEMP TABLE deployments (id uuid, cluster_id text, status text, updated_at timestamptz)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE TEMP TABLE grape_agent_roles (role_name text, cluster_id text)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO pg_temp.deployments VALUES ($1, $2, 'in_progress', now())`, b.running.ID, a.cluster)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO pg_temp.grape_agent_roles VALUES (current_user, $1)`, b.cluster)
	require.NoError(t, err)
	var cluster string
	require.NoError(t, conn.QueryRow(ctx, `SELECT grape_agent_cluster()`).Scan(&cluster))
	require.Equal(t, a.cluster, cluster)
	seqs, streams, lines, created := logBatch(50, 1)
	_, err = conn.Exec(ctx, store.AppendLogsSQL, b.running.ID, seqs, streams, lines, created)
	requireRefused(t, err)

	// Finished deployments are history, even A's own.
	require.NoError(t, asA.Finish(ctx, a.running.ID, a.agentID, store.Outcome{Status: store.StatusSucceeded}))
	tag, err := pool.Exec(ctx, `UPDATE deployments SET status = 'in_progress', finished_at = NULL WHERE id = $1`, a.running.ID)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
	_, err = appendLogs(ctx, asA, a.running.ID, 10, 1)
	requireRefused(t, err, "the log of a finished deployment is closed")
	_, err = pool.Exec(ctx, appendAgentLine, a.running.ID, "late note")
	requireRefused(t, err)

	after := tn.snapshot(t, a.cluster)
	require.Equal(t, before["configs"], after["configs"])
	require.Equal(t, before["config_versions"], after["config_versions"])
	require.Equal(t, before["clusters"], after["clusters"])
	require.Equal(t, before["deployment_logs"], after["deployment_logs"])
}

// TestAgentFullCycleAsItsRole: everything the agent does for its own
// cluster works under its role.
func TestAgentFullCycleAsItsRole(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	a := tn.seed(t, "a")
	tn.seed(t, "b") // a neighbour whose rows must not disturb A's cycle
	asA, pool, _ := tn.agent(t, a.cluster)
	ctx := tn.ctx
	const me = "agent-a-1"
	lease := time.Minute

	require.NoError(t, asA.RegisterAgent(ctx, store.Agent{ID: me, ClusterID: a.cluster, Hostname: "h1", Version: "test"}))
	require.NoError(t, asA.RegisterAgent(ctx, store.Agent{ID: me, ClusterID: a.cluster, Hostname: "h1", Version: "test2"}), "re-registering is an upsert")

	// The seed left A's running deployment to another agent; finish it as a
	// rescuer would not, but as the agent that holds it.
	require.NoError(t, asA.Finish(ctx, a.running.ID, a.agentID, store.Outcome{Status: store.StatusSucceeded}))

	// Claim the queued one (stage).
	d, err := asA.Claim(ctx, a.cluster, me, lease)
	require.NoError(t, err)
	require.Equal(t, a.queued.ID, d.ID)
	require.Equal(t, store.StatusInProgress, d.Status)
	require.NoError(t, asA.SetPhase(ctx, d.ID, me, store.PhasePlan))
	require.NoError(t, asA.SetCommit(ctx, d.ID, me, strings.Repeat("b", 40)))
	require.NoError(t, asA.SetPlanSummary(ctx, d.ID, me, map[string]int{"add": 2}))
	require.NoError(t, asA.SetOutputs(ctx, d.ID, me, map[string]string{"vpc_id": "vpc-1"}))
	require.NoError(t, asA.SetCost(ctx, d.ID, me, map[string]string{"monthly": "1.00"}))
	hb, err := asA.Heartbeat(ctx, d.ID, me, lease)
	require.NoError(t, err)
	require.False(t, hb.CancelRequested)

	// Log lines: the batch path, its retry, and the INSERT … ON CONFLICT path.
	n, err := appendLogs(ctx, asA, d.ID, 1, 500)
	require.NoError(t, err)
	require.EqualValues(t, 500, n)
	n, err = appendLogs(ctx, asA, d.ID, 1, 500)
	require.NoError(t, err)
	require.Zero(t, n, "a retried batch is skipped, not doubled")
	seqs, streams, lines, created := logBatch(501, 100)
	tag, err := pool.Exec(ctx, insertIgnoringDuplicates, d.ID, seqs, streams, lines, created)
	require.NoError(t, err)
	require.EqualValues(t, 100, tag.RowsAffected())
	tag, err = pool.Exec(ctx, insertIgnoringDuplicates, d.ID, seqs, streams, lines, created)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
	// COPY is what the owner uses; for an agent role PostgreSQL refuses it
	// outright under row-level security, its own rows included.
	_, err = copyLogs(ctx, pool, d.ID, 601, 10)
	require.Equal(t, "0A000", sqlState(err), "%v", err)
	read, err := asA.ReadLogs(ctx, d.ID, 0, 1000)
	require.NoError(t, err)
	require.Len(t, read, 600)
	last, err := asA.LastSeq(ctx, d.ID)
	require.NoError(t, err)
	require.EqualValues(t, 600, last)

	// Finish and claim the next in one batch; queue a drift check first.
	drift, err := asA.Enqueue(ctx, store.EnqueueParams{ClusterID: a.cluster, ConfigID: a.prod.ID, Action: store.ActionDrift, RequestedBy: me})
	require.NoError(t, err, "the agent queues its own drift checks")
	require.Equal(t, store.StatusQueued, drift.Status)
	next, finishErr, err := asA.FinishAndClaim(ctx, d.ID, me, store.Outcome{Status: store.StatusSucceeded}, a.cluster, lease)
	require.NoError(t, err)
	require.NoError(t, finishErr)
	require.NotNil(t, next)
	require.Equal(t, drift.ID, next.ID)

	// A drift report for its own config and its own run.
	var reportID uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO drift_reports (config_id, cluster_id, deployment_id, status, commit_sha, duration_ms, details)
VALUES ($1, $2, $3, 'drifted', $4, 1200, '{"changed":["aws_vpc.main"]}') RETURNING id`,
		a.prod.ID, a.cluster, next.ID, strings.Repeat("c", 40)).Scan(&reportID))

	// The drift run's agent vanishes before apply: its lease expires and a
	// peer rescues it — requeue plus a note, in one transaction.
	require.NoError(t, asA.SetPhase(ctx, next.ID, me, store.PhasePlan))
	_, err = tn.pool.Exec(ctx, `UPDATE deployments SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, next.ID)
	require.NoError(t, err)
	rescued, err := asA.RescueExpired(ctx, a.cluster, time.Minute)
	require.NoError(t, err)
	require.Len(t, rescued, 1)
	require.Equal(t, next.ID, rescued[0].Deployment.ID)
	after, err := asA.GetDeployment(ctx, next.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, after.Status, "a lost drift check fails (see DecideRescue)")
	notes, err := asA.ReadLogs(ctx, next.ID, 0, 10)
	require.NoError(t, err)
	require.Len(t, notes, 1)
	require.Contains(t, notes[0].Line, "lost during drift check")

	// An approved plan whose agent went offline: the rescuer fails it and
	// writes the note although the row was awaiting approval, not running.
	planned, err := tn.admin.Enqueue(ctx, store.EnqueueParams{ClusterID: a.cluster, ConfigID: a.stage.ID, RequireApproval: true})
	require.NoError(t, err)
	got, err := asA.Claim(ctx, a.cluster, "agent-gone", lease)
	require.NoError(t, err)
	require.Equal(t, planned.ID, got.ID)
	require.NoError(t, asA.AwaitApproval(ctx, planned.ID, "agent-gone"))
	_, err = tn.admin.Approve(ctx, planned.ID, "reviewer", "")
	require.NoError(t, err)
	rescued, err = asA.RescueExpired(ctx, a.cluster, time.Minute)
	require.NoError(t, err)
	require.Len(t, rescued, 1)
	require.Equal(t, planned.ID, rescued[0].Deployment.ID)
	notes, err = asA.ReadLogs(ctx, planned.ID, 0, 10)
	require.NoError(t, err)
	require.NotEmpty(t, notes)
	require.Contains(t, notes[len(notes)-1].Line, "agent-gone that holds the saved plan is offline")

	// An approval nobody decided on within the config's timeout: the
	// rescuer, as the agent role, expires it (grants and policies allow it).
	parked, err := tn.admin.Enqueue(ctx, store.EnqueueParams{ClusterID: a.cluster, ConfigID: a.stage.ID, RequireApproval: true})
	require.NoError(t, err)
	got, err = asA.Claim(ctx, a.cluster, me, lease)
	require.NoError(t, err)
	require.Equal(t, parked.ID, got.ID)
	require.NoError(t, asA.SetEngine(ctx, parked.ID, me, "opentofu", "1.10.10"))
	require.NoError(t, asA.AwaitApproval(ctx, parked.ID, me))
	_, err = tn.pool.Exec(ctx, `UPDATE deployments SET awaiting_approval_at = now() - interval '25 hours' WHERE id = $1`, parked.ID)
	require.NoError(t, err)
	rescued, err = asA.RescueExpired(ctx, a.cluster, time.Minute)
	require.NoError(t, err)
	require.Len(t, rescued, 1)
	require.Equal(t, store.StatusCancelled, rescued[0].Deployment.Status)
	require.Equal(t, "opentofu", *rescued[0].Deployment.Engine)
	require.Contains(t, *rescued[0].Deployment.Error, "approval expired")

	// Agent liveness.
	require.NoError(t, asA.AgentHeartbeat(ctx, me))
	require.NoError(t, asA.AgentStopped(ctx, me))
	agents, err := asA.ListAgents(ctx, a.cluster)
	require.NoError(t, err)
	require.Len(t, agents, 2)
	for _, ag := range agents {
		if ag.ID == me {
			require.NotNil(t, ag.StoppedAt)
			require.Equal(t, "test2", ag.Version)
		}
	}

	// What the owner sees matches.
	var status string
	require.NoError(t, tn.pool.QueryRow(ctx, `SELECT status FROM drift_reports WHERE id = $1`, reportID).Scan(&status))
	require.Equal(t, "drifted", status)
}

// TestReconcilerRunsAsAgentRole: `grape agent` with the role's URL works with
// no other change — register, LISTEN, claim, heartbeat, finish, rescue.
func TestReconcilerRunsAsAgentRole(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a := tn.seed(t, "a")
	asA, _, url := tn.agent(t, a.cluster)
	// Free the seeded config slot so the queued deployment is the only work.
	require.NoError(t, tn.admin.Finish(tn.ctx, a.running.ID, a.agentID, store.Outcome{Status: store.StatusSucceeded}))

	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		if err := r.SetPhase(ctx, store.PhasePlan); err != nil {
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: err.Error()}
		}
		return store.Outcome{Status: store.StatusSucceeded}
	})
	agent, err := reconciler.New(asA, url, work, reconciler.Options{
		ClusterID: a.cluster, AgentID: "role-agent", Once: true,
		PollInterval: 50 * time.Millisecond, Lease: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(tn.ctx, time.Minute)
	defer cancel()
	require.NoError(t, agent.Run(ctx))

	d, err := tn.admin.GetDeployment(tn.ctx, a.queued.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusSucceeded, d.Status, "error: %v", d.Error)
	require.Equal(t, "role-agent", *d.ClaimedBy)
	agents, err := tn.admin.ListAgents(tn.ctx, a.cluster)
	require.NoError(t, err)
	var found bool
	for _, ag := range agents {
		found = found || (ag.ID == "role-agent" && ag.StoppedAt != nil)
	}
	require.True(t, found, "the agent registered and recorded its stop")
}

// asUser runs fn as a Supabase browser user: role authenticated with the
// request's JWT claims, as PostgREST sets them. claims nil: no JWT.
func (tn *tenancy) asUser(t *testing.T, role string, claims map[string]any, fn func(tx pgx.Tx)) {
	t.Helper()
	tx, err := tn.pool.Begin(tn.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(tn.ctx, `SELECT set_config('role', $1, true)`, role)
	require.NoError(t, err)
	if claims != nil {
		b, err := json.Marshal(claims)
		require.NoError(t, err)
		_, err = tx.Exec(tn.ctx, `SELECT set_config('request.jwt.claims', $1, true)`, string(b))
		require.NoError(t, err)
	}
	fn(tx)
}

// visible counts the rows of each Grape table the session sees.
func visible(t *testing.T, ctx context.Context, tx pgx.Tx) map[string][]string {
	t.Helper()
	queries := map[string]string{
		"clusters":        `SELECT id FROM clusters ORDER BY 1`,
		"configs":         `SELECT cluster_id FROM configs ORDER BY 1`,
		"config_versions": `SELECT c.cluster_id FROM config_versions v JOIN configs c ON c.id = v.config_id ORDER BY 1`,
		"deployments":     `SELECT cluster_id FROM deployments ORDER BY 1`,
		"deployment_logs": `SELECT d.cluster_id FROM deployment_logs l JOIN deployments d ON d.id = l.deployment_id ORDER BY 1`,
		"drift_reports":   `SELECT cluster_id FROM drift_reports ORDER BY 1`,
		"agents":          `SELECT cluster_id FROM agents ORDER BY 1`,
	}
	out := map[string][]string{}
	for table, q := range queries {
		rows, err := tx.Query(ctx, q)
		require.NoError(t, err, table)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, table)
		if len(ids) > 0 {
			out[table] = ids
		} else {
			out[table] = nil
		}
	}
	return out
}

// TestSupabaseUsersSeeOnlyTheirClusters: browser users through the
// authenticated role, keyed on clusters.owner_id = auth.uid() or the JWT's
// app_metadata.org_id.
func TestSupabaseUsersSeeOnlyTheirClusters(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, supabase)
	ctx := tn.ctx
	x, y, z := tn.seed(t, "x"), tn.seed(t, "y"), tn.seed(t, "z")
	userX, userY := uuid.New(), uuid.New()
	acme := "acme-" + uuid.NewString()[:8]
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, x.cluster, store.ClusterOwnership{OwnerID: &userX}))
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, y.cluster, store.ClusterOwnership{OwnerID: &userY}))
	require.NoError(t, tn.admin.SetClusterOwnership(ctx, z.cluster, store.ClusterOwnership{OrgID: &acme}))
	own, err := tn.admin.GetClusterOwnership(ctx, x.cluster)
	require.NoError(t, err)
	require.Equal(t, userX, *own.OwnerID)

	claimsX := map[string]any{"sub": userX.String(), "role": "authenticated", "email": "x@example.com"}
	only := func(cluster string, counts map[string]int) map[string][]string {
		out := map[string][]string{}
		for table, n := range counts {
			for i := 0; i < n; i++ {
				out[table] = append(out[table], cluster)
			}
		}
		return out
	}
	perCluster := map[string]int{"clusters": 1, "configs": 2, "config_versions": 3, "deployments": 2, "deployment_logs": 3, "drift_reports": 1, "agents": 1}
	none := map[string][]string{"clusters": nil, "configs": nil, "config_versions": nil, "deployments": nil, "deployment_logs": nil, "drift_reports": nil, "agents": nil}

	t.Run("owner sees only its cluster", func(t *testing.T) {
		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			require.Equal(t, only(x.cluster, perCluster), visible(t, ctx, tx))
		})
	})
	t.Run("organisation member sees the organisation's cluster", func(t *testing.T) {
		tn.asUser(t, "authenticated", map[string]any{"sub": uuid.NewString(), "app_metadata": map[string]any{"org_id": acme}}, func(tx pgx.Tx) {
			require.Equal(t, only(z.cluster, perCluster), visible(t, ctx, tx))
		})
	})
	t.Run("organisation in user-editable metadata is not trusted", func(t *testing.T) {
		tn.asUser(t, "authenticated", map[string]any{"sub": uuid.NewString(), "user_metadata": map[string]any{"org_id": acme}}, func(tx pgx.Tx) {
			require.Equal(t, none, visible(t, ctx, tx))
		})
	})
	t.Run("authenticated without a JWT sees nothing", func(t *testing.T) {
		tn.asUser(t, "authenticated", nil, func(tx pgx.Tx) {
			require.Equal(t, none, visible(t, ctx, tx))
		})
	})
	t.Run("anon sees nothing", func(t *testing.T) {
		for _, table := range []string{"clusters", "configs", "deployments", "deployment_logs", "grape_agent_roles"} {
			tn.asUser(t, "anon", map[string]any{"role": "anon"}, func(tx pgx.Tx) {
				_, err := tx.Exec(ctx, `SELECT * FROM `+table)
				requireRefused(t, err, table)
			})
		}
	})
	t.Run("service_role sees everything", func(t *testing.T) {
		tn.asUser(t, "service_role", map[string]any{"role": "service_role"}, func(tx pgx.Tx) {
			v := visible(t, ctx, tx)
			require.ElementsMatch(t, []string{x.cluster, y.cluster, z.cluster}, v["clusters"])
		})
	})
	t.Run("owner queues on its cluster, not on another's", func(t *testing.T) {
		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			var status, requestedBy string
			require.NoError(t, tx.QueryRow(ctx, `INSERT INTO deployments (config_id, cluster_id, action, requested_by) VALUES ($1, $2, 'plan', 'someone else')
RETURNING status, requested_by`, x.stage.ID, x.cluster).Scan(&status, &requestedBy))
			require.Equal(t, "queued", status)
			require.Equal(t, "x@example.com", requestedBy, "recorded as the JWT's user, not what the client wrote")

			for name, q := range map[string][]any{
				"Y's config in Y":        {`INSERT INTO deployments (config_id, cluster_id) VALUES ($1, $2)`, y.prod.ID, y.cluster},
				"X's config in Y":        {`INSERT INTO deployments (config_id, cluster_id) VALUES ($1, $2)`, x.prod.ID, y.cluster},
				"Y's config in X":        {`INSERT INTO deployments (config_id, cluster_id) VALUES ($1, $2)`, y.prod.ID, x.cluster},
				"a finished deployment":  {`INSERT INTO deployments (config_id, cluster_id, status) VALUES ($1, $2, 'succeeded')`, x.prod.ID, x.cluster},
				"a pre-claimed one":      {`INSERT INTO deployments (config_id, cluster_id, claimed_by) VALUES ($1, $2, 'me')`, x.prod.ID, x.cluster},
				"a config in Y":          {`INSERT INTO configs (cluster_id, name, spec) VALUES ($1, 'evil', '{}')`, y.cluster},
				"a cluster":              {`INSERT INTO clusters (id, owner_id) VALUES ($1, $2)`, uniqueCluster("mine"), userX},
				"a log line":             {`INSERT INTO deployment_logs (deployment_id, seq, stream, line) VALUES ($1, 99, 'agent', 'x')`, x.running.ID},
				"a drift report":         {`INSERT INTO drift_reports (config_id, cluster_id, status) VALUES ($1, $2, 'in_sync')`, x.prod.ID, x.cluster},
				"grape_append_logs":      {store.AppendLogsSQL, x.running.ID, []int64{99}, []string{"agent"}, []string{"x"}, []time.Time{time.Now()}},
				"a finished status":      {`UPDATE deployments SET status = 'succeeded' WHERE id = $1`, x.queued.ID},
				"ownership of Y":         {`UPDATE clusters SET owner_id = $1 WHERE id = $2`, userX, y.cluster},
				"a config of X moved":    {`UPDATE configs SET cluster_id = $1 WHERE id = $2`, y.cluster, x.prod.ID},
				"the config history":     {`UPDATE config_versions SET spec = '{}'`},
				"a deployment's history": {`DELETE FROM deployments WHERE id = $1`, x.queued.ID},
			} {
				_, err := tx.Exec(ctx, "SAVEPOINT s")
				require.NoError(t, err)
				_, err = tx.Exec(ctx, q[0].(string), q[1:]...)
				require.Error(t, err, name)
				_, err = tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s")
				require.NoError(t, err)
			}
		})
	})
	t.Run("owner edits its config; history is written for it", func(t *testing.T) {
		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			var id uuid.UUID
			require.NoError(t, tx.QueryRow(ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ($1, 'web', '{"modules":{}}') RETURNING id`, x.cluster).Scan(&id))
			var version int
			require.NoError(t, tx.QueryRow(ctx, `UPDATE configs SET spec = '{"modules":{"vpc":{}}}' WHERE id = $1 RETURNING version`, id).Scan(&version))
			require.Equal(t, 2, version)
			var n int
			require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM config_versions WHERE config_id = $1`, id).Scan(&n))
			require.Equal(t, 2, n)
			tag, err := tx.Exec(ctx, `UPDATE configs SET spec = '{}' WHERE cluster_id = $1`, y.cluster)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected(), "Y's configs are not X's to edit")
		})
	})
	t.Run("owner cancels its queued deployment, not another's", func(t *testing.T) {
		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			var status, by string
			require.NoError(t, tx.QueryRow(ctx, `UPDATE deployments SET cancel_requested_at = now(), cancel_requested_by = 'forged' WHERE id = $1
RETURNING status, cancel_requested_by`, x.queued.ID).Scan(&status, &by))
			require.Equal(t, "cancelled", status, "nothing runs a queued deployment: it ends at once")
			require.Equal(t, "x@example.com", by)
			var note string
			require.NoError(t, tx.QueryRow(ctx, `SELECT line FROM deployment_logs WHERE deployment_id = $1 ORDER BY seq DESC LIMIT 1`, x.queued.ID).Scan(&note))
			require.Equal(t, "cancelled by x@example.com before it started", note)

			tag, err := tx.Exec(ctx, `UPDATE deployments SET cancel_requested_at = now() WHERE id = $1`, y.queued.ID)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected())
			// A running deployment gets a request its agent acts on.
			require.NoError(t, tx.QueryRow(ctx, `UPDATE deployments SET cancel_requested_at = now() WHERE id = $1 RETURNING status`, x.running.ID).Scan(&status))
			require.Equal(t, "in_progress", status)
		})
	})
	t.Run("owner approves only an unchanged plan", func(t *testing.T) {
		// A plan parked for approval on a config of its own (the agent's
		// part is not the point here, so the row is put in that state).
		gated, err := tn.admin.UpsertConfig(ctx, x.cluster, "gated", json.RawMessage(`{}`), store.ConfigSettings{})
		require.NoError(t, err)
		d, err := tn.admin.Enqueue(ctx, store.EnqueueParams{ClusterID: x.cluster, ConfigID: gated.ID, RequireApproval: true})
		require.NoError(t, err)
		id := d.ID
		_, err = tn.pool.Exec(ctx, `UPDATE deployments SET status = 'awaiting_approval', phase = 'approval', claimed_by = 'agent-x',
    claimed_at = now(), started_at = now(), attempt = 1 WHERE id = $1`, id)
		require.NoError(t, err)

		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			var by string
			require.NoError(t, tx.QueryRow(ctx, `UPDATE deployments SET approved_at = '2000-01-01', approved_by = 'forged' WHERE id = $1
RETURNING approved_by`, id).Scan(&by))
			require.Equal(t, "x@example.com", by)
			var recent bool
			require.NoError(t, tx.QueryRow(ctx, `SELECT approved_at > now() - interval '1 minute' FROM deployments WHERE id = $1`, id).Scan(&recent))
			require.True(t, recent, "the server's clock, not the client's")
			_, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, x.queued.ID)
			require.ErrorContains(t, err, "not awaiting approval")
		})

		// The intent changes after the plan: approval is refused.
		_, err = tn.admin.UpsertConfig(ctx, x.cluster, "gated", json.RawMessage(`{"changed":true}`), store.ConfigSettings{})
		require.NoError(t, err)
		tn.asUser(t, "authenticated", claimsX, func(tx pgx.Tx) {
			_, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, id)
			require.ErrorContains(t, err, "approval refused: the config changed from v1 to v2")
		})
		tn.asUser(t, "authenticated", map[string]any{"sub": userY.String()}, func(tx pgx.Tx) {
			tag, err := tx.Exec(ctx, `UPDATE deployments SET approved_at = now() WHERE id = $1`, id)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected(), "Y cannot approve X's plan")
		})
	})
}

// TestMigrationWithRolesButNoAuth: the API roles exist but auth.uid() does
// not (a half-Supabase): the portal_users migration adds auth.uid() and the user policies, so a
// user sees only the clusters they have a role on.
func TestMigrationWithRolesButNoAuth(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, rolesNoAuth)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	member := uuid.New()
	_, err := tn.admin.SetMember(tn.ctx, a.cluster, member, store.RoleViewer)
	require.NoError(t, err)
	tn.asUser(t, "authenticated", map[string]any{"sub": uuid.NewString()}, func(tx pgx.Tx) {
		require.Empty(t, visible(t, tn.ctx, tx)["clusters"], "a user with no role sees nothing")
	})
	tn.asUser(t, "authenticated", map[string]any{"sub": member.String()}, func(tx pgx.Tx) {
		require.Equal(t, []string{a.cluster}, visible(t, tn.ctx, tx)["clusters"], "not %s", b.cluster)
	})
}

// userPolicies is what role authenticated may do in a database: its
// policies and its table and column grants.
func userPolicies(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(ctx, `
SELECT format('policy %s.%s %s using=%s check=%s', tablename, policyname, cmd, qual, with_check)
FROM pg_policies WHERE 'authenticated' = ANY (roles) AND schemaname = current_schema()
UNION ALL
SELECT format('column %s.%s %s', table_name, column_name, privilege_type)
FROM information_schema.column_privileges
WHERE grantee = 'authenticated' AND table_schema = current_schema()
  AND NOT has_table_privilege('authenticated', format('%I.%I', table_schema, table_name), privilege_type)
UNION ALL
SELECT format('table %s %s', table_name, privilege_type)
FROM information_schema.role_table_grants WHERE grantee = 'authenticated' AND table_schema = current_schema()
ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestUserRulesSameOnPlainPostgres: a database migrated without Supabase
// gives role authenticated exactly the rules a Supabase one does (the portal_users migration
// catches up on what 0003-0010 created only on Supabase).
func TestUserRulesSameOnPlainPostgres(t *testing.T) {
	t.Parallel()
	supa, plain := newTenancy(t, supabase), newTenancy(t, plainPostgres)
	want := userPolicies(t, supa.ctx, supa.pool)
	require.NotEmpty(t, want)
	require.Equal(t, want, userPolicies(t, plain.ctx, plain.pool))
	var uid *string
	require.NoError(t, plain.pool.QueryRow(plain.ctx, `SELECT set_config('request.jwt.claims', '{"sub":"7d3c1a52-0f8e-4c55-9a53-3f3c1d0f2a11"}', false), auth.uid()::text`).Scan(new(string), &uid))
	require.Equal(t, "7d3c1a52-0f8e-4c55-9a53-3f3c1d0f2a11", deref(uid), "auth.uid() reads the claims on plain PostgreSQL too")
}

// TestMigrationOnPlainPostgres runs on a private server that has never seen
// the Supabase roles (the shared one has them once a Supabase test ran).
func TestMigrationOnPlainPostgres(t *testing.T) {
	t.Parallel()
	pg := testsupport.StartPostgres(t)
	ctx := context.Background()

	// Roles are server-wide and migrations per database: a migration that
	// meets grape_agent being created by another database's migration (here:
	// an open transaction) waits for it, then adopts the role.
	admin := testsupport.Pool(t, pg.SuperuserURL("postgres"))
	dbURL := func(name string) string {
		_, err := admin.Exec(ctx, `CREATE DATABASE `+name)
		require.NoError(t, err)
		return strings.Replace(pg.SuperuserURL("postgres"), "/postgres?", "/"+name+"?", 1)
	}
	holder, err := admin.Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `CREATE ROLE grape_agent NOLOGIN`)
	require.NoError(t, err)
	racer := testsupport.Pool(t, dbURL("racer"))
	migrated := make(chan error, 1)
	go func() { _, err := store.Migrate(ctx, racer); migrated <- err }()
	require.Eventually(t, func() bool {
		var waiting bool
		return admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted)`).Scan(&waiting) == nil && waiting
	}, 30*time.Second, 10*time.Millisecond, "the migration waits on the uncommitted role")
	require.NoError(t, holder.Commit(ctx))
	require.NoError(t, <-migrated)

	// And several at once.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		pool := testsupport.Pool(t, dbURL(fmt.Sprintf("race_%d", i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = store.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "concurrent migration %d", i)
	}

	url := testsupport.MigratedDatabaseOn(t, pg)
	pool := testsupport.Pool(t, url)
	var roles []string
	rows, err := pool.Query(ctx, `SELECT rolname::text FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY 1`)
	require.NoError(t, err)
	roles, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"authenticated"}, roles, "a plain server gets the one role the portal acts as (the portal_users migration), not Supabase's others")
	var policies []string
	rows, err = pool.Query(ctx, `SELECT tablename || '.' || policyname FROM pg_policies ORDER BY 1`)
	require.NoError(t, err)
	policies, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, policies, "deployments.agent_update")
	require.Contains(t, policies, "deployments.user_queue")
	var unprotected []string
	rows, err = pool.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND NOT relrowsecurity ORDER BY 1`)
	require.NoError(t, err)
	unprotected, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, unprotected, "every Grape table has row-level security")

	tn := &tenancy{ctx: ctx, adminURL: url, pool: pool, admin: store.New(pool)}
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	asA, _, _ := tn.agent(t, a.cluster)
	_, err = asA.Claim(ctx, b.cluster, "thief", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	cs, err := asA.ListClusters(ctx)
	require.NoError(t, err)
	require.Len(t, cs, 1)
}

// TestAgentRoleLifecycle: create once, keep the password on re-run, rotate
// on request, refuse a role that can do more than an agent, revoke.
func TestAgentRoleLifecycle(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	ctx := tn.ctx
	a := tn.seed(t, "a")
	ping := func(role, password string) error {
		url, err := store.AgentURL(tn.adminURL, role, password)
		require.NoError(t, err)
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}

	first, err := tn.admin.CreateAgentRole(ctx, a.cluster, store.AgentRoleOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tn.admin.DropAgentRole(context.Background(), a.cluster) })
	require.Equal(t, store.AgentRoleName(a.cluster), first.Name)
	require.True(t, first.Created)
	require.Len(t, first.Password, 32)
	require.NoError(t, ping(first.Name, first.Password))

	again, err := tn.admin.CreateAgentRole(ctx, a.cluster, store.AgentRoleOptions{})
	require.NoError(t, err)
	require.Equal(t, store.AgentRole{Name: first.Name, ClusterID: a.cluster}, again, "no password when nothing changed")
	require.NoError(t, ping(first.Name, first.Password), "re-running keeps the password")

	rotated, err := tn.admin.CreateAgentRole(ctx, a.cluster, store.AgentRoleOptions{RotatePassword: true})
	require.NoError(t, err)
	require.True(t, rotated.Rotated)
	require.NotEqual(t, first.Password, rotated.Password)
	require.NoError(t, ping(first.Name, rotated.Password))
	err = ping(first.Name, first.Password)
	require.Equal(t, "28P01", sqlState(err), "the old password stops working: %v", err)

	// The role can do nothing beyond the group's grants.
	var attrs struct{ super, bypass, createRole, createDB, login, schemaCreate bool }
	var groups []string
	require.NoError(t, tn.pool.QueryRow(ctx, `SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin,
    has_schema_privilege(rolname, current_schema(), 'CREATE'),
    ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)
FROM pg_roles r WHERE rolname = $1`, first.Name).Scan(&attrs.super, &attrs.bypass, &attrs.createRole, &attrs.createDB, &attrs.login, &attrs.schemaCreate, &groups))
	require.Equal(t, struct{ super, bypass, createRole, createDB, login, schemaCreate bool }{login: true}, attrs)
	require.Equal(t, []string{store.AgentGroupRole}, groups)

	_, err = tn.admin.CreateAgentRole(ctx, uniqueCluster("nope"), store.AgentRoleOptions{})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, "grape cluster create")

	// A pre-existing role of the same name with more powers is not adopted.
	risky := tn.seed(t, "risky")
	_, err = tn.pool.Exec(ctx, `CREATE ROLE `+store.AgentRoleName(risky.cluster)+` LOGIN CREATEDB`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = tn.pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+store.AgentRoleName(risky.cluster))
	})
	_, err = tn.admin.CreateAgentRole(ctx, risky.cluster, store.AgentRoleOptions{})
	require.ErrorIs(t, err, store.ErrRoleUnsafe)

	// Revoking: the mapping goes first, and a session still connected loses
	// its cluster at once; then the role goes.
	url, err := store.AgentURL(tn.adminURL, first.Name, rotated.Password)
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM deployments`).Scan(&n))
	require.Equal(t, 2, n)
	_, err = tn.pool.Exec(ctx, `DELETE FROM grape_agent_roles WHERE role_name = $1`, first.Name)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM deployments`).Scan(&n))
	require.Zero(t, n, "an unmapped role's open session sees nothing")
	require.NoError(t, tn.admin.DropAgentRole(ctx, a.cluster))
	err = ping(first.Name, rotated.Password)
	require.Equal(t, "28P01", sqlState(err), "a dropped role cannot log in: %v", err)
}

func TestAgentRoleSQLGolden(t *testing.T) {
	got := store.AgentRoleSQLWithVerifier("eu-west-1", "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy", true)
	golden := filepath.Join("testdata", "agent_role.sql.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run go test ./store -run Golden -update to create it")
	require.Equal(t, string(want), got)

	out, err := store.AgentRoleSQL("eu-west-1", "s3cret-password")
	require.NoError(t, err)
	require.NotContains(t, out, "s3cret-password", "only the verifier goes into the script")
	require.Regexp(t, `'SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}'`, out)
	_, err = store.AgentRoleSQL("Bad_ID", "x")
	require.ErrorIs(t, err, store.ErrInvalid)
}

func TestAgentURL(t *testing.T) {
	cases := []struct {
		name, admin, want string
	}{
		{"url", "postgres://postgres:adminpw@db.example.com:5432/postgres?sslmode=require",
			"postgres://grape_agent_eu_1:pw@db.example.com:5432/postgres?sslmode=require"},
		{"postgresql scheme without password", "postgresql://admin@127.0.0.1/grape",
			"postgresql://grape_agent_eu_1:pw@127.0.0.1/grape"},
		{"supabase pooler keeps the project ref", "postgres://postgres.abcdefgh:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
			"postgres://grape_agent_eu_1.abcdefgh:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"},
		{"user and password in the query", "postgres://db.example.com/postgres?user=postgres.ref&password=x&sslmode=verify-full",
			"postgres://grape_agent_eu_1.ref:pw@db.example.com/postgres?sslmode=verify-full"},
		{"key=value", "host=db.example.com user=postgres password=adminpw dbname=grape",
			"host=db.example.com user=postgres password=adminpw dbname=grape user=grape_agent_eu_1 password=pw"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.AgentURL(tc.admin, "grape_agent_eu_1", "pw")
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			cfg, err := pgconn.ParseConfig(got)
			require.NoError(t, err)
			require.Equal(t, "pw", cfg.Password)
		})
	}
	_, err := store.AgentURL("postgres://bad host:x@/", "r", "p")
	require.ErrorIs(t, err, store.ErrInvalid)
	require.NotContains(t, err.Error(), "x@", "no admin password in the error")
}

// TestForgedNotifyCannotCancelAnotherClustersRun: any role may NOTIFY any
// channel, so an agent's credential of cluster A can send
// 'cancel:<id>' on cluster B's channel (B's deployment ids leak through
// grape_logs and B's own channel, see docs/security.md). B's agent must treat
// a notification as a wake-up and check the row — which only a person, or the
// owner, can mark cancel-requested — before interrupting a run.
func TestForgedNotifyCannotCancelAnotherClustersRun(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	_, poolA, _ := tn.agent(t, a.cluster)
	asB, _, urlB := tn.agent(t, b.cluster)
	require.NoError(t, tn.admin.Finish(tn.ctx, b.running.ID, b.agentID, store.Outcome{Status: store.StatusSucceeded}))

	started := make(chan uuid.UUID, 1)
	work := reconciler.WorkFunc(func(ctx context.Context, r *reconciler.Run) store.Outcome {
		started <- r.Deployment.ID
		select {
		case <-ctx.Done():
			return store.Outcome{Status: store.StatusFailed, Kind: store.KindInternal, Error: "interrupted"}
		case <-time.After(3 * time.Second):
			return store.Outcome{Status: store.StatusSucceeded}
		}
	})
	agent, err := reconciler.New(asB, urlB, work, reconciler.Options{
		ClusterID: b.cluster, AgentID: "b-agent", PollInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(tn.ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	defer func() { stop(); <-done }()
	id := <-started
	require.Eventually(t, agent.Listening, 10*time.Second, 10*time.Millisecond)

	forged := notify.ClusterEvent{Kind: notify.Cancel, DeploymentID: id}
	_, err = poolA.Exec(tn.ctx, `SELECT pg_notify($1, $2)`, notify.ClusterEvents(b.cluster).Channel(), forged.Payload())
	require.NoError(t, err, "PostgreSQL lets any role notify any channel")
	var d store.Deployment
	require.Eventually(t, func() bool {
		d, err = tn.admin.GetDeployment(tn.ctx, id)
		return err == nil && d.Status.Final()
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, store.StatusSucceeded, d.Status, "a forged notification interrupted B's run")
}

// TestNotificationsAreNotIsolated records, so that nobody believes otherwise,
// what LISTEN/NOTIFY shows an agent of another cluster: B's queue events and
// every deployment's log progress.
func TestNotificationsAreNotIsolated(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t, plainPostgres)
	a, b := tn.seed(t, "a"), tn.seed(t, "b")
	_, _, urlA := tn.agent(t, a.cluster)
	conn, err := pgx.Connect(tn.ctx, urlA)
	require.NoError(t, err)
	defer conn.Close(tn.ctx)
	bChannel := notify.ClusterEvents(b.cluster).Channel()
	_, err = conn.Exec(tn.ctx, `LISTEN `+pgx.Identifier{bChannel}.Sanitize()+`; LISTEN `+notify.LogsChannel)
	require.NoError(t, err)

	d, err := tn.admin.Enqueue(tn.ctx, store.EnqueueParams{ClusterID: b.cluster, ConfigID: b.prod.ID})
	require.NoError(t, err)
	_, err = tn.admin.AppendLogs(tn.ctx, b.running.ID, []int64{4}, []store.Stream{store.StreamAgent}, []string{"x"}, []time.Time{time.Now()})
	require.NoError(t, err)
	got := map[string]string{}
	for len(got) < 2 {
		ctx, cancel := context.WithTimeout(tn.ctx, 5*time.Second)
		n, err := conn.WaitForNotification(ctx)
		cancel()
		require.NoError(t, err)
		got[n.Channel] = n.Payload
	}
	require.Equal(t, notify.ClusterEvent{Kind: notify.Queued, DeploymentID: d.ID}.Payload(), got[bChannel])
	require.Equal(t, notify.LogBatch{DeploymentID: b.running.ID, LastSeq: 4}.Payload(), got[notify.LogsChannel])
}
