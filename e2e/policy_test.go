package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/policy"
	"github.com/grapehq/grape/store"
)

// A team's conftest policies, kept in their own git repository: package
// main, deny and warn as sets of strings, the input being the plan JSON.
const conftestPolicy = `package main

import rego.v1

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_vpc"
	rc.change.after.tags.team == "forbidden"
	msg := sprintf("%s: team %q may not own a VPC", [rc.address, rc.change.after.tags.team])
}

warn contains msg if {
	input.grape.intent.tags.team == "review"
	msg := "team review: a person looks at this change first"
}
`

// Policy sets that cannot be evaluated: a conflict between two values of a
// complete rule, and a loop past the time bound.
const conflictPolicy = `package main

import rego.v1

owner := "a" if input.grape.action == "apply"

owner := "b" if count(input.resource_changes) > 0

deny contains "never" if owner == "c"
`

const slowPolicy = `package main

import rego.v1

deny contains "never" if {
	some i in numbers.range(1, 20000)
	some j in numbers.range(1, 20000)
	i * j == -1
}
`

func (e *env) policyOf(d store.Deployment) policy.Result {
	e.t.Helper()
	require.NotEmpty(e.t, d.Policy, "deployment %s has no policy verdicts", d.ID)
	var res policy.Result
	require.NoError(e.t, json.Unmarshal(d.Policy, &res))
	return res
}

// TestPolicyVerdicts: policies from a git repository (conftest style) and
// the default pack judge every plan on the agent. A deny fails the run with
// kind policy and creates nothing; a warning sends an otherwise ungated run
// to a person, and the approved plan is applied; the default pack warns on
// a VPC replacement; a conflict and a loop past the bound fail the run with
// kind policy while the agent lives on.
func TestPolicyVerdicts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.gitSrv.CreateRepo(t, "policies.git")
	e.gitSrv.CloneAsColleague(t, "policies.git").CommitAndPush("team policies", map[string][]byte{
		"conftest/main.rego": []byte(conftestPolicy),
	})
	sets := t.TempDir()
	for name, body := range map[string]string{"conflict": conflictPolicy, "slow": slowPolicy} {
		require.NoError(t, os.MkdirAll(filepath.Join(sets, "sets", name), 0o755))
		require.NoError(t, writeFile(filepath.Join(sets, "sets", name, name+".rego"), body))
	}
	a := e.startAgent("agent-1", "--policy-git", e.gitSrv.GitURL("policies.git")+"//conftest", "--policy-ref", "main",
		"--policy-dir", sets, "--policy-timeout", "2s")

	// A deny: failed, kind policy, the message on the row and in the log,
	// nothing in the emulator.
	denied := e.config("denied", `{"region": "eu-central-1", "tags": {"team": "forbidden"}, "modules": {"vpc": {"nat_gateway": "none"}}}`)
	d := e.deploy(denied, store.ActionApply)
	got := e.wait(d.ID, 3*time.Minute, store.StatusFailed)
	require.Equal(t, store.KindPolicy, deref(got.ErrorKind))
	want := `module.vpc[0].aws_vpc.this: team "forbidden" may not own a VPC`
	require.Contains(t, deref(got.Error), want)
	require.Contains(t, e.logText(d.ID), want)
	res := e.policyOf(got)
	require.Equal(t, 1, res.Denies)
	require.True(t, strings.HasPrefix(res.Digest, "sha256:"), res.Digest)
	require.Zero(t, e.vpcCount(), "a denied plan created something")
	require.NotContains(t, e.logText(d.ID), "Apply complete")

	// A warning on a config that does not require approval: parked, the
	// warning on the row; approved, it is applied.
	warned := e.config("warned", `{"region": "eu-central-1", "tags": {"team": "review"}, "modules": {"vpc": {"nat_gateway": "none"}}}`)
	require.False(t, warned.RequireApproval)
	w := e.deploy(warned, store.ActionApply)
	parked := e.wait(w.ID, 3*time.Minute, store.StatusAwaitingApproval)
	require.True(t, parked.RequireApproval, "a policy warning must raise require_approval")
	res = e.policyOf(parked)
	require.Equal(t, 1, res.Warnings)
	require.Zero(t, res.Denies)
	require.Contains(t, e.logText(w.ID), "team review: a person looks at this change first")
	require.Zero(t, e.vpcCount())
	e.grape("approve", w.ID.String())
	e.wait(w.ID, 3*time.Minute, store.StatusSucceeded)
	require.Equal(t, 1, e.vpcCount())
	// The commit names the policies that judged its plan.
	sha := deref(parked.CommitSHA)
	require.Contains(t, e.git("-C", e.repoDir, "log", "-1", "--format=%B", sha), "Grape-Policies: "+res.Digest)

	// A new CIDR would replace the VPC: the template marks the input as the
	// stack's identity, so the CLI refuses to store it for an applied config.
	path := filepath.Join(t.TempDir(), "cidr.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"region": "eu-central-1", "tags": {"team": "platform"}, "modules": {"vpc": {"nat_gateway": "none", "cidr": "10.42.0.0/16"}}}`), 0o644))
	_, stderr, err := e.grapeResult("config", "apply", "--cluster", e.cluster, "--name", "warned", "-f", path)
	require.Error(t, err)
	require.Contains(t, stderr, `modules.vpc.cidr "10.0.0.0/16" → "10.42.0.0/16"`)
	require.Contains(t, stderr, "nothing was stored")

	// The default pack: deleting a VPC needs a person, whatever the config
	// says.
	r := e.deploy(warned, store.ActionDestroy)
	parked = e.wait(r.ID, 3*time.Minute, store.StatusAwaitingApproval)
	res = e.policyOf(parked)
	require.Positive(t, res.Warnings)
	require.Contains(t, e.logText(r.ID), "aws_vpc")
	e.grape("reject", r.ID.String())
	require.Equal(t, 1, e.vpcCount())

	// Evaluation errors: kind policy, nothing applied, the agent lives on.
	for _, tc := range []struct{ set, want string }{
		{"conflict", "conflict"},
		{"slow", "2s"},
	} {
		cfg := e.config("set-"+tc.set, fmt.Sprintf(vpcOnly, tc.set), "--policy-set", tc.set)
		d := e.deploy(cfg, store.ActionApply)
		got := e.wait(d.ID, 3*time.Minute, store.StatusFailed)
		require.Equal(t, store.KindPolicy, deref(got.ErrorKind), "set %s", tc.set)
		require.Contains(t, deref(got.Error), "policy evaluation failed", "set %s", tc.set)
		require.Contains(t, deref(got.Error), tc.want, "set %s", tc.set)
		require.NotEmpty(t, e.policyOf(got).Error, "set %s", tc.set)
	}
	require.Equal(t, 1, e.vpcCount())
	require.True(t, a.alive(), "the agent died on a policy error:\n%s", a.output())
}

// TestPolicyBrokenFileStopsAgent: a policy that does not compile stops the
// agent at start-up, naming the file and line; nothing is claimed.
func TestPolicyBrokenFileStopsAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	dir := t.TempDir()
	require.NoError(t, writeFile(filepath.Join(dir, "broken.rego"), "package main\n\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := \n}\n"))
	cfg := e.config("untouched", fmt.Sprintf(vpcOnly, "x"))
	d := e.deploy(cfg, store.ActionPlan)
	a := e.startAgent("agent-1", "--policy-dir", dir)
	select {
	case err := <-a.done:
		require.Error(t, err, "the agent must exit non-zero")
	case <-time.After(2 * time.Minute):
		t.Fatalf("the agent started with a broken policy:\n%s", a.output())
	}
	out := a.output()
	require.Contains(t, out, "broken.rego:")
	require.Contains(t, out, "loading policies")
	got, err := e.st.GetDeployment(e.ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, got.Status, "nothing may be claimed by an agent that cannot judge plans")
}
