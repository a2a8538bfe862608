package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/store"
)

// TestStateCommands: state list shows the kept versions and the holder,
// restore puts one back and is recorded in the audit log, release forgets
// the holder (audited); rename keeps the id and is audited; the overrides
// are recorded with who asked.
func TestStateCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	cfgID := uuid.MustParse(c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", spec))
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))

	dataDir := t.TempDir()
	ls := localstate.Dir{DataDir: dataDir}
	live := ls.Path("eu-1", cfgID.String())
	require.NoError(t, os.MkdirAll(filepath.Dir(live), 0o700))
	require.NoError(t, os.WriteFile(live, []byte(`{"version":4,"serial":7,"lineage":"x","resources":[{"mode":"managed","type":"aws_vpc","name":"this","instances":[{}]}]}`), 0o600))
	kept, _, err := ls.Snapshot("eu-1", cfgID.String(), "before apply", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(live, []byte(`{"version":4,"serial":8,"lineage":"x","resources":[]}`), 0o600))
	_, err = st.RecordStateHolder(ctx, "eu-1", cfgID, uuid.New(), "agent-a")
	require.NoError(t, err)

	out, errOut, code := c.run("", "state", "list", "--cluster", "eu-1", "--config", "prod", "--data-dir", dataDir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "agent agent-a holds the state of prod")
	require.Contains(t, out, kept.Name)
	require.Regexp(t, `current\s+\S+\s+8\s+0`, out)

	_, errOut, code = c.run("", "state", "restore", "--cluster", "eu-1", "--config", "prod", "--data-dir", dataDir, "nope")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "grape state list")
	out = c.ok("state", "restore", "--cluster", "eu-1", "--config", "prod", "--data-dir", dataDir, "--as", "carol", kept.Name)
	require.Contains(t, out, "restored "+kept.Name+" of prod (serial 7, 1 resources)")
	b, err := os.ReadFile(live)
	require.NoError(t, err)
	require.Contains(t, string(b), `"serial":7`)

	require.Contains(t, c.ok("config", "rename", "--cluster", "eu-1", "prod", "production", "--as", "dave"), "is now production")
	renamed, err := st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, "production", renamed.Name)

	_, errOut, code = c.run("", "state", "release", "--cluster", "eu-1", "--config", "production")
	require.Equal(t, 2, code, "a release without a reason is a usage error")
	require.Contains(t, errOut, "--reason")
	require.Contains(t, c.ok("state", "release", "--cluster", "eu-1", "--config", "production", "--reason", "disk moved to agent-b", "--as", "erin"), "agent agent-a no longer holds")

	// The state actions are in the access trail `grape audit` shows (oldest
	// first), next to its config.* and deployment.* events.
	var lines []string
	for _, l := range strings.Split(c.ok("audit", "--cluster", "eu-1"), "\n") {
		if strings.Contains(l, cfgID.String()) && (strings.Contains(l, " state.") || strings.Contains(l, " config.renamed")) {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 3, lines)
	require.Contains(t, lines[0], "carol")
	require.Contains(t, lines[0], "state.restored")
	require.Contains(t, lines[1], "dave")
	require.Contains(t, lines[1], "config.renamed")
	require.Contains(t, lines[2], "erin")
	require.Contains(t, lines[2], "state.holder_released")

	id := uuid.MustParse(c.ok("deploy", "--cluster", "eu-1", "--config", "production", "--accept-empty-state", "--as", "frank"))
	d, err := st.GetDeployment(ctx, id)
	require.NoError(t, err)
	require.True(t, d.AcceptEmptyState)
	require.False(t, d.AcceptRollback)
	require.Equal(t, "frank", d.RequestedBy)
	require.Contains(t, c.ok("status", id.String()), "accept empty state (requested by frank)")

	// The moves of a cluster without any: a header, no rows; --cluster is required.
	require.Equal(t, []string{"MOVE", "CONFIG", "FROM", "TO", "STATUS", "REQUESTED", "BY", "ERROR"}, strings.Fields(c.ok("state", "moves", "--cluster", "eu-1")))
	require.Equal(t, "[]", c.ok("state", "moves", "--cluster", "eu-1", "--json"), "an empty list, not null")
	_, errOut, code = c.run("", "state", "moves")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--cluster is required")
}

// TestBackendChangeRefusalNamesTheCommands: a backend change of an applied
// config is refused with the exact commands that move its state by hand,
// naming the agent that holds it; nothing is stored.
func TestBackendChangeRefusalNamesTheCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	local := writeFile(t, "local.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	cfgID := uuid.MustParse(c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", local))
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfgID, Action: store.ActionApply, RequestedBy: "t"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, "eu-1", "agent-a", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.SetStateResources(ctx, d.ID, "agent-a", 3))
	_, err = st.RecordStateHolder(ctx, "eu-1", cfgID, d.ID, "agent-a")
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, d.ID, "agent-a", store.Outcome{Status: store.StatusSucceeded}))

	s3 := writeFile(t, "s3.json", `{"region":"eu-central-1","backend":{"type":"s3","bucket":"tfstate-a"},"modules":{"vpc":{}}}`)
	_, errOut, code := c.run("", "config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", s3)
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "nothing was stored")
	require.Contains(t, errOut, "on agent agent-a, which holds its state, with that agent's --data-dir: `aws s3 cp <data-dir>/state/eu-1/"+cfgID.String()+"/terraform.tfstate s3://tfstate-a/grape/eu-1/"+cfgID.String()+"/terraform.tfstate --region eu-central-1`")
	require.Contains(t, errOut, "`grape config apply --cluster eu-1 --name prod --state-moved -f "+s3+"`")
	cfg, err := st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, 1, cfg.Version)

	// A region change is no state move: no such steps.
	west := writeFile(t, "west.json", `{"region":"eu-west-1","modules":{"vpc":{}}}`)
	_, errOut, code = c.run("", "config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", west)
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "--replace-stack")
	require.Contains(t, errOut, "`grape config move-region --cluster eu-1 --region eu-west-1 prod`")
	require.NotContains(t, errOut, "aws s3 cp")
}

// TestConfigMoveRegion: an applied stack moves region only as a destroy in
// the old region and a create in the new one, both awaiting approval; a bad
// region, the same region or a config with nothing applied are refused and
// store nothing.
func TestConfigMoveRegion(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	intent := writeFile(t, "intent.json", `{"region":"eu-central-1","tags":{"team":"blue"},"modules":{"vpc":{}}}`)
	cfgID := uuid.MustParse(c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", intent))
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "idle", "-f", intent)
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))

	_, errOut, code := c.run("", "config", "move-region", "--cluster", "eu-1", "--region", "eu-west-1", "idle")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "no applied stack to move")

	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfgID, Action: store.ActionApply, RequestedBy: "t"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, "eu-1", "agent-a", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.SetStateResources(ctx, d.ID, "agent-a", 3))
	require.NoError(t, st.Finish(ctx, d.ID, "agent-a", store.Outcome{Status: store.StatusSucceeded}))

	for _, tc := range []struct{ region, want string }{
		{"eu-central-1", "is in eu-central-1 already"},
		{"Frankfurt", `"Frankfurt" is not an AWS region name`},
	} {
		_, errOut, code = c.run("", "config", "move-region", "--cluster", "eu-1", "--region", tc.region, "prod")
		require.NotEqual(t, 0, code, tc.region)
		require.Contains(t, errOut, tc.want)
	}
	cfg, err := st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, 1, cfg.Version, "a refused move stores nothing")

	out, errOut, code := c.run("", "config", "move-region", "--cluster", "eu-1", "--region", "eu-west-1", "--as", "erin", "prod")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, cfgID.String(), strings.TrimSpace(out))
	require.Contains(t, errOut, "destroy")
	require.Contains(t, errOut, "the stack in eu-central-1")
	cfg, err = st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, 2, cfg.Version)
	require.JSONEq(t, `{"region":"eu-west-1","tags":{"team":"blue"},"modules":{"vpc":{}}}`, string(cfg.Spec))

	destroy, err := st.Claim(ctx, "eu-1", "agent-a", time.Minute)
	require.NoError(t, err)
	require.Equal(t, store.ActionDestroy, destroy.Action)
	require.Equal(t, 1, *destroy.ConfigVersion, "the destroy plans the stack in the old region")
	require.True(t, destroy.RequireApproval)
	require.Equal(t, "erin", destroy.RequestedBy)
	ds, err := st.ListDeployments(ctx, store.ListFilter{ClusterID: "eu-1", ConfigID: &cfgID})
	require.NoError(t, err)
	var applies int
	for _, x := range ds {
		if x.Action == store.ActionApply && x.Status == store.StatusQueued {
			applies++
			require.Equal(t, 2, *x.ConfigVersion)
			require.True(t, x.RequireApproval)
		}
	}
	require.Equal(t, 1, applies, "the create in the new region waits behind the destroy")
}

// TestStackInputChangeRefused: an input the templates mark as the stack's
// identity (the VPC's cidr) cannot change on an applied config without
// --replace-stack; the refusal names the input, the template's reason and
// both ways out, and stores nothing. Before the first apply it may change.
func TestStackInputChangeRefused(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := context.Background()
	c.ok("cluster", "create", "eu-1")
	first := writeFile(t, "first.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	cfgID := uuid.MustParse(c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", first))
	moved := writeFile(t, "moved.json", `{"region":"eu-central-1","modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`)
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", moved) // nothing applied yet: a free choice
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", first)
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "eu-1", ConfigID: cfgID, Action: store.ActionApply, RequestedBy: "t"})
	require.NoError(t, err)
	_, err = st.Claim(ctx, "eu-1", "agent-a", time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.SetStateResources(ctx, d.ID, "agent-a", 19))
	require.NoError(t, st.Finish(ctx, d.ID, "agent-a", store.Outcome{Status: store.StatusSucceeded}))

	// Unmarked inputs change freely; the default written out is no change.
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f",
		writeFile(t, "same.json", `{"region":"eu-central-1","modules":{"vpc":{"cidr":"10.0.0.0/16","az_count":3}}}`))
	cfg, err := st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	version := cfg.Version

	_, errOut, code := c.run("", "config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", moved)
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, `modules.vpc.cidr "10.0.0.0/16" → "10.1.0.0/16" (a new CIDR replaces the VPC and everything in it)`)
	require.Contains(t, errOut, "nothing was stored")
	require.Contains(t, errOut, "`grape config apply --cluster eu-1 --name prod --replace-stack -f "+moved+"`")
	require.Contains(t, errOut, "`grape deploy --cluster eu-1 --config prod --action destroy`")
	cfg, err = st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, version, cfg.Version, "a refused change stores nothing")

	// --replace-stack stores it, behind the destroy of the stack that exists.
	_, errOut, code = c.run("", "config", "apply", "--cluster", "eu-1", "--name", "prod", "--replace-stack", "-f", moved)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "queued: destroy")
	cfg, err = st.GetConfigByID(ctx, cfgID)
	require.NoError(t, err)
	require.Equal(t, version+1, cfg.Version)
	require.JSONEq(t, `{"region":"eu-central-1","modules":{"vpc":{"cidr":"10.1.0.0/16"}}}`, string(cfg.Spec))
}
