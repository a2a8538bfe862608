package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/store"
)

const driftIntent = `{"region": "eu-central-1", "modules": {"vpc": {"nat_gateway": "none", "name": "drifty"}},
  "backend": {"type": "s3", "bucket": "grape-state", "key": "e2e/drifty.tfstate", "region": "eu-central-1", "use_path_style": true}}`

// driftCheck runs `grape drift check` as its own process with the agent's
// flags, and returns its exit code and the report it printed.
func (e *env) driftCheck(config string) (int, store.DriftReport) {
	e.t.Helper()
	a := e.startAgentArgsOnce("drift-check", "drift", "check", "--config", config, "--json")
	var rep store.DriftReport
	require.NoError(e.t, json.Unmarshal([]byte(a.stdout), &rep), "drift check printed: %s\n%s", a.stdout, a.stderr)
	return a.code, rep
}

type oneShot struct {
	stdout, stderr string
	code           int
}

// startAgentArgsOnce runs a grape command with the agent's environment and
// flags (cluster, workspace, provider mirror) and waits for it.
func (e *env) startAgentArgsOnce(id string, args ...string) oneShot {
	e.t.Helper()
	return e.startAgentArgsOnceAt(filepath.Join(e.t.TempDir(), id), id, args...)
}

// startAgentArgsOnceAt is startAgentArgsOnce with a data dir that outlives
// the command, as an operator's --data-dir does.
func (e *env) startAgentArgsOnceAt(dataDir, id string, args ...string) oneShot {
	e.t.Helper()
	full := slices.Concat(args, []string{"--cluster", e.cluster, "--agent-id", id + "-" + uuid.NewString()[:8], "--data-dir", dataDir,
		"--workspace-url", e.repo, "--provider-mirror", testsupport.ProviderMirror, "--log-format", "json"})
	cmd := exec.CommandContext(e.ctx, e.bin, full...)
	cmd.Env = e.agentEnviron()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(e.t, err)
	}
	return oneShot{stdout: out.String(), stderr: errb.String(), code: code}
}

type driftedResource struct {
	Address    string   `json:"address"`
	Action     string   `json:"action"`
	Attributes []string `json:"attributes"`
}

// TestDriftDetectAndRemediate: in sync after apply; an out-of-band change to
// the VPC's tags and to a security group's rules is reported naming exactly
// those resources and attributes; remediation re-applies the checked commit;
// the next check is in sync. The webhook hears about both transitions, and a
// deployment queued during a check waits for it.
func TestDriftDetectAndRemediate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)
	var mu sync.Mutex
	var events []drift.Event
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev drift.Event
		b, _ := io.ReadAll(r.Body)
		require.NoError(t, json.Unmarshal(b, &ev))
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	e.agentEnv["GRAPE_NOTIFY_URL"] = hook.URL

	cfg := e.config("drifty", driftIntent)
	e.startAgent("agent-1")
	applied := e.wait(e.deploy(cfg, store.ActionApply).ID, 4*time.Minute, store.StatusSucceeded)

	code, rep := e.driftCheck("drifty")
	require.Equal(t, 0, code, "in sync after apply")
	require.Equal(t, store.DriftInSync, rep.Status)
	require.Equal(t, deref(applied.CommitSHA), deref(rep.CommitSHA), "the check plans the last applied commit")
	require.NotNil(t, rep.DeploymentID)
	requireLine(t, e.logs(*rep.DeploymentID), "in sync with commit")

	// Out of band: a console user tags the VPC and opens the default SG.
	var vpcs struct {
		Vpcs []struct {
			VpcId     string
			IsDefault bool
		}
	}
	require.NoError(t, json.Unmarshal([]byte(e.aws("ec2", "describe-vpcs", "--filters", "Name=tag:Name,Values=drifty")), &vpcs))
	require.Len(t, vpcs.Vpcs, 1)
	vpc := vpcs.Vpcs[0].VpcId
	e.aws("ec2", "create-tags", "--resources", vpc, "--tags", "Key=owner,Value=console-user")
	var sgs struct{ SecurityGroups []struct{ GroupId string } }
	require.NoError(t, json.Unmarshal([]byte(e.aws("ec2", "describe-security-groups", "--filters", "Name=vpc-id,Values="+vpc, "Name=group-name,Values=default")), &sgs))
	require.Len(t, sgs.SecurityGroups, 1)
	e.aws("ec2", "authorize-security-group-ingress", "--group-id", sgs.SecurityGroups[0].GroupId, "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")

	code, rep = e.driftCheck("drifty")
	require.Equal(t, 2, code, "drifted")
	require.Equal(t, store.DriftDrifted, rep.Status)
	var details struct{ Resources []driftedResource }
	require.NoError(t, json.Unmarshal(rep.Details, &details))
	got := map[string]driftedResource{}
	for _, r := range details.Resources {
		sort.Strings(r.Attributes)
		got[r.Address] = r
	}
	require.Equal(t, map[string]driftedResource{
		"module.vpc[0].aws_vpc.this":                    {Address: "module.vpc[0].aws_vpc.this", Action: "update", Attributes: []string{"tags", "tags_all"}},
		"module.vpc[0].aws_default_security_group.this": {Address: "module.vpc[0].aws_default_security_group.this", Action: "update", Attributes: []string{"ingress"}},
	}, got, "exactly the changed resources and attributes")
	// The report shows what changed, old → new, as the plan diff does
	// (non-sensitive values only; plandiff's tests hold the sensitive
	// cases): the plan removes the tag the console user added.
	var withValues struct {
		Resources []struct {
			Address string
			Changes []plandiff.Attribute
		}
	}
	require.NoError(t, json.Unmarshal(rep.Details, &withValues))
	var tagged bool
	for _, r := range withValues.Resources {
		for _, c := range r.Changes {
			if r.Address == "module.vpc[0].aws_vpc.this" && c.Path == "tags.owner" && c.Old == "console-user" && c.New == nil {
				tagged = true
			}
		}
	}
	require.True(t, tagged, "the drift report shows the added tag's value: %s", rep.Details)

	// Remediate: an apply of the checked commit, no new rendering.
	remID := e.grape("drift", "remediate", rep.ID.String())
	rem := e.wait(uuid.MustParse(remID), 4*time.Minute, store.StatusSucceeded)
	require.Equal(t, deref(rep.CommitSHA), deref(rem.CommitSHA))
	require.Equal(t, deref(rep.CommitSHA), deref(rem.SourceCommit))
	requireLine(t, e.logs(rem.ID), "applying existing commit")

	code, rep = e.driftCheck("drifty")
	require.Equal(t, 0, code, "in sync after remediation: %+v", rep)

	// A deployment queued while a check runs waits for it.
	checkDone := make(chan oneShot, 1)
	go func() {
		checkDone <- e.startAgentArgsOnce("drift-check-2", "drift", "check", "--config", "drifty", "--json")
	}()
	var check store.Deployment
	require.Eventually(t, func() bool {
		ds, err := e.st.ListDeployments(e.ctx, store.ListFilter{ClusterID: e.cluster, Statuses: []store.Status{store.StatusInProgress}})
		require.NoError(t, err)
		for _, d := range ds {
			if d.Action == store.ActionDrift && d.PhaseName() == store.PhasePlan {
				check = d
				return true
			}
		}
		return false
	}, 2*time.Minute, 100*time.Millisecond)
	during := e.deploy(cfg, store.ActionPlan)
	require.Zero(t, (<-checkDone).code)
	planned := e.wait(during.ID, 3*time.Minute, store.StatusSucceeded)
	check, err := e.st.GetDeployment(e.ctx, check.ID)
	require.NoError(t, err)
	require.False(t, planned.ClaimedAt.Before(*check.FinishedAt), "the plan was claimed at %s, before the drift check finished at %s", planned.ClaimedAt, check.FinishedAt)

	// The webhook heard the transitions, not the quiet checks.
	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Event)
	}
	require.Equal(t, []string{"drift.detected", "drift.resolved"}, kinds)
	require.Equal(t, "drifty", events[0].Config)
}

// TestDriftScheduleRejected: a bad schedule stops the agent at start-up,
// naming the flag.
func TestDriftScheduleRejected(t *testing.T) {
	t.Parallel()
	e := &env{t: t, bin: testsupport.GrapeBinary(t)}
	e.ctx = t.Context()
	_, errOut, err := e.grapeResult("agent", "--cluster", "x", "--drift-schedule", "every tuesday", "--database-url", "postgres://localhost/none")
	require.Error(t, err)
	require.Contains(t, errOut, `--drift-schedule: drift schedule "every tuesday"`)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1)
}
