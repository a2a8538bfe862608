package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// runApplying claims the config's next deployment as agent and finishes it, having
// recorded a plan that adds add resources and, when set, the state's size.
func (b bundle) runApplying(t *testing.T, cluster, agent string, want uuid.UUID, add int, stateResources *int, status store.Status) {
	t.Helper()
	d, err := b.st.Claim(b.ctx, cluster, agent, time.Minute)
	require.NoError(t, err)
	require.Equal(t, want, d.ID)
	require.NoError(t, b.st.SetPlanSummary(b.ctx, d.ID, agent, map[string]any{"add": add, "change": 0, "destroy": 0, "replace": 0, "resources": []any{}}))
	if stateResources != nil {
		require.NoError(t, b.st.SetStateResources(b.ctx, d.ID, agent, *stateResources))
	}
	o := store.Outcome{Status: status}
	if status == store.StatusFailed {
		o.Kind, o.Error = store.KindApply, "boom"
	}
	require.NoError(t, b.st.Finish(b.ctx, d.ID, agent, o))
}

func (b bundle) enqueue(t *testing.T, cluster string, cfg uuid.UUID, action store.Action) uuid.UUID {
	t.Helper()
	d, err := b.st.Enqueue(b.ctx, store.EnqueueParams{ClusterID: cluster, ConfigID: cfg, Action: action, RequestedBy: "alice"})
	require.NoError(t, err)
	return d.ID
}

func TestClaimLeavesHeldConfigsToTheirHolder(t *testing.T) {
	b := setup(t)
	held := b.config(t, "aff", "held")
	free, err := b.st.UpsertConfig(b.ctx, "aff", "free", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)

	first := b.enqueue(t, "aff", held.ID, store.ActionApply)
	d, err := b.st.Claim(b.ctx, "aff", "agent-a", time.Minute)
	require.NoError(t, err)
	require.Equal(t, first, d.ID)
	h, err := b.st.RecordStateHolder(b.ctx, "aff", held.ID, d.ID, "agent-a")
	require.NoError(t, err)
	require.Equal(t, "agent-a", h.AgentID)
	require.NoError(t, b.st.Finish(b.ctx, d.ID, "agent-a", store.Outcome{Status: store.StatusSucceeded}))

	// Recording again is idempotent for the holder and refused for others.
	_, err = b.st.RecordStateHolder(b.ctx, "aff", held.ID, d.ID, "agent-a")
	require.NoError(t, err)
	h, err = b.st.RecordStateHolder(b.ctx, "aff", held.ID, d.ID, "agent-b")
	require.ErrorIs(t, err, store.ErrHeldElsewhere)
	require.Equal(t, "agent-a", h.AgentID)

	second := b.enqueue(t, "aff", held.ID, store.ActionApply)
	other := b.enqueue(t, "aff", free.ID, store.ActionApply)

	// agent-b passes over the held config and takes the other one, though it is younger.
	d, err = b.st.Claim(b.ctx, "aff", "agent-b", time.Minute)
	require.NoError(t, err)
	require.Equal(t, other, d.ID)
	_, err = b.st.Claim(b.ctx, "aff", "agent-b", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound, "the held config's deployment is not agent-b's to take")
	_, err = b.st.ClaimByID(b.ctx, second, "agent-b", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)

	// While agent-a is offline, front ends say why the deployment waits.
	queued, err := b.st.GetDeployment(b.ctx, second)
	require.NoError(t, err)
	why, err := b.st.WaitReason(b.ctx, queued, 30*time.Second)
	require.NoError(t, err)
	require.Contains(t, why, "waiting for agent agent-a, which holds this config's state")
	require.Contains(t, why, "never registered")

	require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: "agent-a", ClusterID: "aff"}))
	why, err = b.st.WaitReason(b.ctx, queued, 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, why, "an online holder is no reason to explain")

	// `grape drift check` from elsewhere is told where to run, not left waiting.
	_, err = b.st.EnqueueClaimed(b.ctx, store.EnqueueParams{ClusterID: "aff", ConfigID: held.ID, Action: store.ActionPlan}, "drift-cli", time.Minute)
	require.ErrorIs(t, err, store.ErrHeldElsewhere)
	require.ErrorContains(t, err, "agent agent-a")

	d, err = b.st.Claim(b.ctx, "aff", "agent-a", time.Minute)
	require.NoError(t, err)
	require.Equal(t, second, d.ID)
}

func TestHolderWaitReason(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { return ptr(now.Add(-d)) }
	for _, tc := range []struct {
		name              string
		lastSeen, stopped *time.Time
		want              string
	}{
		{"never registered", nil, nil, "waiting for agent a1, which holds this config's state; it has never registered with this control plane"},
		{"online", at(5 * time.Second), nil, ""},
		{"silent", at(5 * time.Minute), nil, "waiting for agent a1, which holds this config's state; last seen 2026-12-06T09:55:00Z (5m0s ago)"},
		{"stopped", at(10 * time.Second), at(10 * time.Second), "waiting for agent a1, which holds this config's state; last seen 2026-12-06T09:59:50Z (10s ago, stopped)"},
		{"restarted after a stop", at(time.Second), at(time.Minute), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, store.HolderWaitReason("a1", tc.lastSeen, tc.stopped, now, 30*time.Second))
		})
	}
}

func TestAppliedState(t *testing.T) {
	for _, tc := range []struct {
		name string
		// steps: action, plan adds, state resources after (nil: not recorded), status
		steps []step
		want  bool
	}{
		{"never deployed", nil, false},
		{"apply that created resources", []step{{store.ActionApply, 19, ptr(19), store.StatusSucceeded}}, true},
		{"apply from before state_resources existed", []step{{store.ActionApply, 19, nil, store.StatusSucceeded}}, true},
		{"failed apply", []step{{store.ActionApply, 19, nil, store.StatusFailed}}, false},
		{"plan only", []step{{store.ActionPlan, 19, nil, store.StatusSucceeded}}, false},
		{"destroyed", []step{{store.ActionApply, 19, ptr(19), store.StatusSucceeded}, {store.ActionDestroy, 0, ptr(0), store.StatusSucceeded}}, false},
		{"applied again after a destroy", []step{{store.ActionApply, 19, ptr(19), store.StatusSucceeded}, {store.ActionDestroy, 0, ptr(0), store.StatusSucceeded}, {store.ActionApply, 3, ptr(3), store.StatusSucceeded}}, true},
		{"every module switched off", []step{{store.ActionApply, 19, ptr(19), store.StatusSucceeded}, {store.ActionApply, 0, ptr(0), store.StatusSucceeded}}, false},
		{"a legacy no-change apply does not hide the creating one", []step{{store.ActionApply, 19, nil, store.StatusSucceeded}, {store.ActionApply, 0, nil, store.StatusSucceeded}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			c := b.config(t, "ap", "x")
			for _, s := range tc.steps {
				id := b.enqueue(t, "ap", c.ID, s.action)
				b.runApplying(t, "ap", "agent-1", id, s.add, s.state, s.status)
			}
			got, err := b.st.AppliedState(b.ctx, c.ID)
			require.NoError(t, err)
			require.Equal(t, tc.want, got.Applied)
			if tc.want {
				require.NotNil(t, got.Last)
				require.Equal(t, store.ActionApply, got.Last.Action)
				require.Equal(t, 1, got.Version)
			}
		})
	}
}

type step struct {
	action store.Action
	add    int
	state  *int
	status store.Status
}

func TestStackIdentityGuard(t *testing.T) {
	b := setup(t)
	_, err := b.st.CreateCluster(b.ctx, "idg", "")
	require.NoError(t, err)
	spec := func(region string, backend string) json.RawMessage {
		s := `{"region":"` + region + `","modules":{"vpc":{}}`
		if backend != "" {
			s += `,"backend":` + backend
		}
		return json.RawMessage(s + `}`)
	}
	c, err := b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-central-1", ""), store.ConfigSettings{})
	require.NoError(t, err)

	// Not applied yet: anything goes.
	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-west-1", ""), store.ConfigSettings{})
	require.NoError(t, err)
	id := b.enqueue(t, "idg", c.ID, store.ActionApply)
	b.runApplying(t, "idg", "agent-1", id, 19, ptr(19), store.StatusSucceeded)

	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-north-1", ""), store.ConfigSettings{})
	require.ErrorIs(t, err, store.ErrStackIdentity)
	require.Contains(t, err.Error(), "region eu-west-1 → eu-north-1")
	require.Contains(t, err.Error(), "--replace-stack")
	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-west-1", `{"type":"s3","bucket":"state-bucket"}`), store.ConfigSettings{})
	require.ErrorIs(t, err, store.ErrStackIdentity)
	require.Contains(t, err.Error(), "backend")
	// An explicit local backend is the default one: no change.
	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-west-1", `{"type":"local"}`), store.ConfigSettings{})
	require.NoError(t, err)
	// Other changes are fine.
	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", json.RawMessage(`{"region":"eu-west-1","modules":{"vpc":{"cidr":"10.9.0.0/16"}}}`), store.ConfigSettings{})
	require.NoError(t, err)

	// A state copied to the new backend by hand: --state-moved, backend only.
	_, err = b.st.RecordStateHolder(b.ctx, "idg", c.ID, uuid.New(), "agent-1")
	require.NoError(t, err)
	_, err = b.st.MoveStateBackend(b.ctx, "idg", "prod", spec("eu-north-1", `{"type":"s3","bucket":"state-bucket"}`), store.ConfigSettings{}, "carol")
	require.ErrorIs(t, err, store.ErrStackIdentity, "a region change is never a state move")
	moved, err := b.st.MoveStateBackend(b.ctx, "idg", "prod", spec("eu-west-1", `{"type":"s3","bucket":"state-bucket"}`), store.ConfigSettings{}, "carol")
	require.NoError(t, err)
	require.Contains(t, string(moved.Spec), "state-bucket")
	_, err = b.st.StateHolderOf(b.ctx, c.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "state in S3 is any agent's")
	// The setting does not outlive its transaction.
	_, err = b.st.UpsertConfig(b.ctx, "idg", "prod", spec("eu-west-1", ""), store.ConfigSettings{})
	require.ErrorIs(t, err, store.ErrStackIdentity)

	// A front end writing the row directly meets the same guard.
	_, err = b.pool.Exec(b.ctx, `UPDATE configs SET spec = jsonb_set(spec, '{region}', '"us-east-1"') WHERE id = $1`, c.ID)
	require.ErrorContains(t, err, "would create the stack again")

	// The way out: destroy queued ahead of the change, the re-create behind it.
	before, err := b.st.GetConfigByID(b.ctx, c.ID)
	require.NoError(t, err)
	cfg, destroy, apply, err := b.st.ReplaceStack(b.ctx, "idg", "prod", spec("us-east-1", ""), store.ConfigSettings{}, "alice")
	require.NoError(t, err)
	require.Equal(t, before.Version+1, cfg.Version)
	require.Equal(t, store.ActionDestroy, destroy.Action)
	require.Equal(t, before.Version, *destroy.ConfigVersion, "the destroy plans the stack that exists")
	require.Equal(t, cfg.Version, *apply.ConfigVersion)
	require.True(t, destroy.CreatedAt.Before(apply.CreatedAt))
	require.True(t, destroy.RequireApproval && apply.RequireApproval, "a person sees both halves before either runs")
	got, err := b.st.Claim(b.ctx, "idg", "agent-1", time.Minute)
	require.NoError(t, err)
	require.Equal(t, destroy.ID, got.ID, "the destroy runs first")
	ev := b.stateEvents(t, "idg", c.ID)
	require.Len(t, ev, 2)
	require.Equal(t, string(store.AuditStateBackendMove), ev[0].Action)
	require.Equal(t, string(store.AuditStackReplace), ev[1].Action)
	require.Equal(t, "carol", ev[0].Actor)
	require.Equal(t, "alice", ev[1].Actor)
}

// stateEvents returns the state actions of 0009 in the config's audit
// trail, oldest first (the trail also holds 0008's config.* events).
func (b bundle) stateEvents(t *testing.T, cluster string, configID uuid.UUID) []store.AuditEvent {
	t.Helper()
	all, err := b.st.ListAudit(b.ctx, store.AuditFilter{ClusterID: cluster, TargetID: configID.String()})
	require.NoError(t, err)
	var ev []store.AuditEvent
	for _, e := range all {
		switch store.AuditAction(e.Action) {
		case store.AuditConfigRename, store.AuditStateRestore, store.AuditStateHolderRelease, store.AuditStackReplace, store.AuditStateBackendMove:
			ev = append(ev, e)
		}
	}
	return ev
}

func TestRenameIsAudited(t *testing.T) {
	b := setup(t)
	c := b.config(t, "ren", "old")
	_, err := b.st.UpsertConfig(b.ctx, "ren", "taken", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)

	r, err := b.st.RenameConfig(b.ctx, "ren", c.ID, "new", "alice@laptop")
	require.NoError(t, err)
	require.Equal(t, "new", r.Name)
	require.Equal(t, c.Version, r.Version, "a rename is no new version of the intent")

	_, err = b.st.RenameConfig(b.ctx, "ren", c.ID, "taken", "alice@laptop")
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = b.st.RenameConfig(b.ctx, "ren", c.ID, "Bad Name", "alice@laptop")
	require.ErrorIs(t, err, store.ErrInvalid)

	// Raw SQL is recorded too, as the session's role.
	_, err = b.pool.Exec(b.ctx, `UPDATE configs SET name = 'raw' WHERE id = $1`, c.ID)
	require.NoError(t, err)

	ev := b.stateEvents(t, "ren", c.ID)
	require.Len(t, ev, 2)
	require.Equal(t, string(store.AuditConfigRename), ev[1].Action)
	require.JSONEq(t, `{"from":"new","to":"raw"}`, string(ev[1].Details))
	require.NotEmpty(t, ev[1].Actor)
	require.JSONEq(t, `{"from":"old","to":"new"}`, string(ev[0].Details))
	require.Equal(t, "alice@laptop", ev[0].Actor)
}

func TestReleaseStateHolderIsAudited(t *testing.T) {
	b := setup(t)
	c := b.config(t, "rel", "x")
	_, err := b.st.RecordStateHolder(b.ctx, "rel", c.ID, uuid.New(), "agent-a")
	require.NoError(t, err)
	h, err := b.st.ReleaseStateHolder(b.ctx, c.ID, "bob", "agent-a's disk was restored onto agent-b")
	require.NoError(t, err)
	require.Equal(t, "agent-a", h.AgentID)
	_, err = b.st.StateHolderOf(b.ctx, c.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = b.st.ReleaseStateHolder(b.ctx, c.ID, "bob", "again")
	require.ErrorIs(t, err, store.ErrNotFound)
	ev := b.stateEvents(t, "rel", c.ID)
	require.Len(t, ev, 1)
	require.Equal(t, string(store.AuditStateHolderRelease), ev[0].Action)
	require.Equal(t, "bob", ev[0].Actor)
	require.Contains(t, string(ev[0].Details), "agent-b")
}

func TestLocalStateRisk(t *testing.T) {
	b := setup(t)
	b.config(t, "risk", "local-one")
	_, err := b.st.UpsertConfig(b.ctx, "risk", "s3-one", json.RawMessage(`{"backend":{"type":"s3","bucket":"b"}}`), store.ConfigSettings{})
	require.NoError(t, err)
	for _, a := range []string{"me", "other"} {
		require.NoError(t, b.st.RegisterAgent(b.ctx, store.Agent{ID: a, ClusterID: "risk"}))
	}
	r, err := b.st.LocalStateRiskOf(b.ctx, "risk", "me", time.Minute)
	require.NoError(t, err)
	require.Equal(t, []string{"other"}, r.OtherAgents)
	require.Equal(t, []string{"local-one"}, r.LocalConfigs)
	require.NoError(t, b.st.AgentStopped(b.ctx, "other"))
	r, err = b.st.LocalStateRiskOf(b.ctx, "risk", "me", time.Minute)
	require.NoError(t, err)
	require.Empty(t, r.OtherAgents)
}

// Upgrading a control plane whose configs were applied before affinity
// existed: the agent of each local-state config's last apply becomes its
// holder, so the next deployment goes where the state is.
func TestMigrationRecordsExistingHolders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.Pool(t, testsupport.EmptyDatabaseURL(t))
	migs, err := store.Migrations()
	require.NoError(t, err)
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	for _, m := range migs {
		if m.Name == "state_safety" {
			break
		}
		_, err := pool.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err, m.Name)
	}
	exec(`INSERT INTO clusters (id) VALUES ('up')`)
	var local, s3, never uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ('up', 'local', '{}') RETURNING id`).Scan(&local))
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ('up', 's3', '{"backend":{"type":"s3","bucket":"b"}}') RETURNING id`).Scan(&s3))
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ('up', 'never', '{}') RETURNING id`).Scan(&never))
	for _, row := range []struct {
		cfg            uuid.UUID
		agent, status  string
		finishedMinAgo int
	}{
		{local, "old-agent", "succeeded", 60},
		{local, "new-agent", "succeeded", 10},
		{local, "third-agent", "failed", 5},
		{s3, "old-agent", "succeeded", 10},
		{never, "old-agent", "failed", 10},
	} {
		exec(`INSERT INTO deployments (config_id, cluster_id) VALUES ($1, 'up')`, row.cfg)
		exec(`UPDATE deployments SET status = $2, claimed_by = $3, finished_at = now() - make_interval(mins => $4)
WHERE id = (SELECT id FROM deployments WHERE config_id = $1 AND status = 'queued')`, row.cfg, row.status, row.agent, row.finishedMinAgo)
	}
	_, err = store.Migrate(ctx, pool)
	require.NoError(t, err)

	st := store.New(pool)
	h, err := st.StateHolderOf(ctx, local)
	require.NoError(t, err)
	require.Equal(t, "new-agent", h.AgentID, "the agent of the last successful apply")
	_, err = st.StateHolderOf(ctx, s3)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = st.StateHolderOf(ctx, never)
	require.ErrorIs(t, err, store.ErrNotFound)
}
