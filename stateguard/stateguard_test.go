package stateguard_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

var (
	cfg       = store.Config{ID: uuid.MustParse("0b6f8a4e-6d5c-4a8e-9d3c-1f2e3d4c5b6a"), ClusterID: "eu-1", Name: "prod"}
	finished  = time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	lastApply = store.Deployment{ID: uuid.MustParse("11111111-2222-4333-8444-555555555555"), Action: store.ActionApply,
		FinishedAt: &finished, StateResources: ptr.To(19)}
	applied = store.Applied{Applied: true, Last: &lastApply, Version: 3}
	local   = stateguard.Location{Backend: "local", Path: "/var/lib/grape/state/eu-1/0b6f8a4e-6d5c-4a8e-9d3c-1f2e3d4c5b6a/terraform.tfstate", Agent: "agent-a"}
)

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got+"\n"), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./stateguard -update to create it")
	require.Equal(t, strings.TrimSuffix(string(want), "\n"), got)
}

func TestCheckEmptyState(t *testing.T) {
	dep := func(a store.Action, accept bool) store.Deployment {
		return store.Deployment{Action: a, AcceptEmptyState: accept, RequestedBy: "alice@laptop"}
	}
	for _, tc := range []struct {
		name    string
		applied store.Applied
		prior   int
		dep     store.Deployment
		refused bool
		noted   bool
	}{
		{"first apply", store.Applied{}, 0, dep(store.ActionApply, false), false, false},
		{"applied, state there", applied, 19, dep(store.ActionApply, false), false, false},
		{"applied, state empty", applied, 0, dep(store.ActionApply, false), true, false},
		{"destroy from empty", applied, 0, dep(store.ActionDestroy, false), true, false},
		{"drift check from empty", applied, 0, dep(store.ActionDrift, false), true, false},
		{"plan from empty", applied, 0, dep(store.ActionPlan, false), true, false},
		{"accepted", applied, 0, dep(store.ActionApply, true), false, true},
		{"a drift check never accepts", applied, 0, dep(store.ActionDrift, true), true, false},
		{"destroyed since", store.Applied{Applied: false, Last: &lastApply}, 0, dep(store.ActionApply, false), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, note := stateguard.CheckEmptyState(stateguard.EmptyState{Config: cfg, Deployment: tc.dep, Applied: tc.applied, PriorResources: tc.prior, Where: local})
			require.Equal(t, tc.refused, r != nil)
			require.Equal(t, tc.noted, note != "")
			if r != nil {
				require.Equal(t, store.KindStateMissing, r.Kind)
			}
			if tc.noted {
				require.Contains(t, note, "alice@laptop")
			}
		})
	}
	r, _ := stateguard.CheckEmptyState(stateguard.EmptyState{Config: cfg, Deployment: dep(store.ActionApply, false), Applied: applied, Where: local})
	golden(t, "state_missing_local", r.Msg)
	s3, err := stateguard.LocationOf([]byte(`{"region":"eu-west-1","backend":{"type":"s3","bucket":"acme-state"}}`), cfg.ClusterID, cfg.ID.String(), "", "")
	require.NoError(t, err)
	r, _ = stateguard.CheckEmptyState(stateguard.EmptyState{Config: cfg, Deployment: dep(store.ActionApply, false), Applied: applied, Where: s3})
	golden(t, "state_missing_s3", r.Msg)
}

func TestLocationOf(t *testing.T) {
	for _, tc := range []struct {
		intent string
		want   string
	}{
		{``, "local state /s on agent a"},
		{`{"region":"eu-west-1"}`, "local state /s on agent a"},
		{`{"backend":{"type":"local"}}`, "local state /s on agent a"},
		{`{"region":"eu-west-1","backend":{"type":"s3","bucket":"b1"}}`, "s3 backend s3://b1/grape/eu-1/" + cfg.ID.String() + "/terraform.tfstate (region eu-west-1)"},
		{`{"backend":{"type":"s3","bucket":"b1","key":"k/x.tfstate","region":"us-east-1"}}`, "s3 backend s3://b1/k/x.tfstate (region us-east-1)"},
	} {
		l, err := stateguard.LocationOf([]byte(tc.intent), "eu-1", cfg.ID.String(), "/s", "a")
		require.NoError(t, err)
		require.Equal(t, tc.want, l.String(), tc.intent)
	}
}

func TestCheckAuditTrail(t *testing.T) {
	in := func(version, latest int, found, accept bool) stateguard.AuditTrail {
		return stateguard.AuditTrail{Config: cfg, Deployment: store.Deployment{AcceptRollback: accept, RequestedBy: "bob"},
			Version: version, Found: found, LatestVersion: latest, LatestSHA: "0123456789abcdef0123456789abcdef01234567",
			LatestAt: finished, Path: "clusters/eu-1/" + cfg.ID.String()}
	}
	for _, tc := range []struct {
		name           string
		in             stateguard.AuditTrail
		refused, noted bool
	}{
		{"never committed", in(1, 0, false, false), false, false},
		{"same version", in(5, 5, true, false), false, false},
		{"newer version", in(6, 5, true, false), false, false},
		{"behind", in(3, 5, true, false), true, false},
		{"behind, accepted", in(3, 5, true, true), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, note := stateguard.CheckAuditTrail(tc.in)
			require.Equal(t, tc.refused, r != nil)
			require.Equal(t, tc.noted, note != "")
			if r != nil {
				require.Equal(t, store.KindControlPlaneBehind, r.Kind)
			}
		})
	}
	r, _ := stateguard.CheckAuditTrail(in(3, 5, true, false))
	golden(t, "control_plane_behind", r.Msg)
}

func TestIdentityChange(t *testing.T) {
	for _, tc := range []struct {
		old, new, want string
	}{
		{`{"modules":{"vpc":{}}}`, `{"region":"` + render.DefaultRegion + `","modules":{}}`, ""},
		{`{"region":"eu-central-1"}`, `{"region":"eu-west-1"}`, "region eu-central-1 → eu-west-1"},
		{`{}`, `{"backend":{"type":"local"}}`, ""},
		{`{}`, `{"backend":{"type":"s3","bucket":"b1"}}`, "backend local → s3 bucket b1"},
		{`{"backend":{"bucket":"b1","type":"s3"}}`, `{"backend":{"type":"s3","bucket":"b1"}}`, ""},
		{`{"backend":{"type":"s3","bucket":"b1"}}`, `{"backend":{"type":"s3","bucket":"b2"}}`, "backend s3 bucket b1 → s3 bucket b2"},
	} {
		require.Equal(t, tc.want, stateguard.IdentityChange(json.RawMessage(tc.old), json.RawMessage(tc.new)), tc.old+" → "+tc.new)
	}
	r := stateguard.CheckIdentity(cfg, applied, json.RawMessage(`{"region":"eu-central-1"}`), json.RawMessage(`{"region":"eu-west-1"}`), 4)
	require.NotNil(t, r)
	require.Equal(t, store.KindBadConfig, r.Kind)
	golden(t, "identity_region", r.Msg)
	require.Nil(t, stateguard.CheckIdentity(cfg, applied, json.RawMessage(`{"region":"eu-central-1"}`), json.RawMessage(`{"region":"eu-west-1"}`), 3), "the applied version itself (its destroy)")
	require.Nil(t, stateguard.CheckIdentity(cfg, store.Applied{}, json.RawMessage(`{"region":"eu-central-1"}`), json.RawMessage(`{"region":"eu-west-1"}`), 4), "nothing applied")
}

// The database's identity guard spells the default region out; it must be
// the one render fills in.
func TestDatabaseGuardUsesTheDefaultRegion(t *testing.T) {
	migs, err := store.Migrations()
	require.NoError(t, err)
	var guard string
	for _, m := range migs {
		if strings.Contains(m.SQL, "FUNCTION grape_config_identity_guard") {
			guard = m.SQL
		}
	}
	require.NotEmpty(t, guard)
	require.Contains(t, guard, "coalesce(OLD.spec ->> 'region', '"+render.DefaultRegion+"')")
	require.Contains(t, guard, "coalesce(NEW.spec ->> 'region', '"+render.DefaultRegion+"')")
}

// A backend change names the exact commands that move the state by hand,
// for each direction; the CLI and the agent print the same.
func TestBackendMoveSteps(t *testing.T) {
	const cfgID = "0b6f8a4e-6d5c-4a8e-9d3c-1f2e3d4c5b6a"
	local := json.RawMessage(`{"region":"eu-central-1"}`)
	s3 := json.RawMessage(`{"region":"eu-central-1","backend":{"type":"s3","bucket":"tfstate-a"}}`)
	s3b := json.RawMessage(`{"region":"eu-central-1","backend":{"type":"s3","bucket":"tfstate-b","key":"prod.tfstate","region":"eu-west-1"}}`)
	var all strings.Builder
	for _, tc := range []struct {
		name     string
		from, to json.RawMessage
		holder   string
	}{
		{"local to s3", local, s3, "agent-a"},
		{"local to s3, holder unknown", local, s3, ""},
		{"s3 to s3", s3, s3b, ""},
		{"s3 to local", s3, local, ""},
	} {
		m := stateguard.BackendMove{ClusterID: "eu-1", ConfigID: cfgID, Name: "prod", From: tc.from, To: tc.to, Holder: tc.holder, IntentFile: "new.json"}
		steps := m.Steps()
		require.Len(t, steps, 3, tc.name)
		require.Equal(t, "`grape config apply --cluster eu-1 --name prod --state-moved -f new.json`", steps[1], tc.name)
		fmt.Fprintf(&all, "%s:%s\n", tc.name, m.Text())
	}
	golden(t, "backend_move_steps", all.String())

	cfg := store.Config{ID: uuid.MustParse(cfgID), ClusterID: "eu-1", Name: "prod"}
	r := stateguard.CheckIdentity(cfg, store.Applied{Applied: true, Version: 3}, local, s3, 4)
	require.NotNil(t, r)
	golden(t, "identity_backend", r.Msg)
}

func TestStackInputChanges(t *testing.T) {
	cat, err := render.Default()
	require.NoError(t, err)
	const vpcWhy = " (a new CIDR replaces the VPC and everything in it)"
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"unchanged", `{"modules":{"vpc":{"cidr":"10.0.0.0/16"}}}`, `{"modules":{"vpc":{"cidr":"10.0.0.0/16","az_count":3}}}`, nil},
		{"new cidr", `{"modules":{"vpc":{"cidr":"10.0.0.0/16"}}}`, `{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`,
			[]string{`modules.vpc.cidr "10.0.0.0/16" → "10.1.0.0/16"` + vpcWhy}},
		{"default made explicit", `{"modules":{"vpc":{}}}`, `{"modules":{"vpc":{"cidr":"10.0.0.0/16"}}}`, nil},
		{"explicit back to another default", `{"modules":{"vpc":{"cidr":"10.9.0.0/16"}}}`, `{"modules":{"vpc":{}}}`,
			[]string{`modules.vpc.cidr "10.9.0.0/16" → "10.0.0.0/16"` + vpcWhy}},
		{"unmarked input", `{"modules":{"vpc":{"name":"a"}}}`, `{"modules":{"vpc":{"name":"b"}}}`, nil},
		{"module turned on", `{"modules":{"vpc":{}}}`, `{"modules":{"vpc":{},"rds":{"identifier":"db2"}}}`, nil},
		{"module turned off", `{"modules":{"vpc":{},"eks":{"name":"a"}}}`, `{"modules":{"vpc":{},"eks":{"enabled":false,"name":"b"}}}`, nil},
		{"two modules, catalog order", `{"modules":{"rds":{"identifier":"db1"},"eks":{"name":"a"}}}`, `{"modules":{"rds":{"identifier":"db2"},"eks":{"name":"b"}}}`,
			[]string{`modules.eks.name "a" → "b" (` + mustWhy(t, cat, "eks", "name") + `)`, `modules.rds.identifier "db1" → "db2" (` + mustWhy(t, cat, "rds", "identifier") + `)`}},
		{"unparsable applied intent", `not json`, `{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`, nil},
	} {
		require.Equal(t, tc.want, stateguard.StackInputChanges(cat, json.RawMessage(tc.old), json.RawMessage(tc.new)), tc.name)
	}
	require.Nil(t, stateguard.StackInputChanges(nil, json.RawMessage(`{"modules":{"vpc":{}}}`), json.RawMessage(`{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`)))

	old, now := json.RawMessage(`{"modules":{"vpc":{}}}`), json.RawMessage(`{"modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`)
	r := stateguard.CheckStackInputs(cat, cfg, applied, old, now, 4)
	require.NotNil(t, r)
	require.Equal(t, store.KindBadConfig, r.Kind)
	golden(t, "stack_inputs", r.Msg)
	require.Nil(t, stateguard.CheckStackInputs(cat, cfg, applied, old, now, 3), "the applied version itself (its destroy)")
	require.Nil(t, stateguard.CheckStackInputs(cat, cfg, store.Applied{}, old, now, 4), "nothing applied: the apply behind --replace-stack's destroy")
	require.Nil(t, stateguard.CheckStackInputs(cat, cfg, applied, old, old, 4), "no marked input changed")
}

func mustWhy(t *testing.T, cat *render.Catalog, module, input string) string {
	t.Helper()
	m, ok := cat.Module(module)
	require.True(t, ok)
	v, ok := m.Variable(input)
	require.True(t, ok)
	require.True(t, v.StackIdentity, "%s.%s is not marked", module, input)
	return v.StackIdentityWhy
}
