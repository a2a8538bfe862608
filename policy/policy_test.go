package policy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The password the fixture's plan was made with (make-fixtures.sh): a
// sensitive variable, in clear in the plan JSON as in every real plan.
const fixturePassword = "fixture-password-not-a-secret-1"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func fixtureIntent(t testing.TB, name string) json.RawMessage {
	return json.RawMessage(readFixture(t, filepath.Join("intents", name)))
}

func defaultEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	e, err := Load(context.Background(), Sources{DefaultPack: true}, opts)
	require.NoError(t, err)
	return e
}

// writeFiles writes name → content under a new directory.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return dir
}

func dirEngine(t testing.TB, opts Options, files map[string]string) (*Engine, string) {
	t.Helper()
	dir := writeFiles(t, files)
	e, err := Load(context.Background(), Sources{Dirs: []string{dir}}, opts)
	require.NoError(t, err)
	return e, dir
}

func eval(t testing.TB, e *Engine, in Input) *Result {
	t.Helper()
	res, err := e.Evaluate(context.Background(), in)
	require.NoError(t, err)
	return res
}

func messages(r *Result, kind Kind) []string {
	var out []string
	for _, v := range r.Verdicts {
		if v.Kind == kind {
			out = append(out, v.Msg)
		}
	}
	return out
}

// TestDefaultPackRegoTests runs the default pack's *_test.rego with OPA's
// tester, as `grape policy test` does: make test runs them through this.
func TestDefaultPackRegoTests(t *testing.T) {
	files, err := Sources{DefaultPack: true}.Collect(context.Background())
	require.NoError(t, err)
	results, err := RunTests(context.Background(), files, Options{})
	require.NoError(t, err)
	tested := map[string]int{}
	for _, r := range results {
		assert.True(t, r.Pass, "%s:%d %s.%s: %s", r.File, r.Line, r.Package, r.Name, r.Error)
		tested[strings.TrimSuffix(filepath.Base(r.File), "_test.rego")]++
	}
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f.Name), ".rego")
		if f.Test || base == "lib" {
			continue
		}
		assert.GreaterOrEqual(t, tested[base], 3, "policy %s needs its own tests in %s_test.rego", f.Name, base)
	}
	assert.GreaterOrEqual(t, len(results), 30)
}

// TestDefaultPackOnRealPlans judges plans terraform made from Grape's own
// templates against moto (testdata/README.md).
func TestDefaultPackOnRealPlans(t *testing.T) {
	e := defaultEngine(t, Options{})
	all := readFixture(t, "plan-all-modules.json")
	meta := Meta{Cluster: "eu-1", Config: "all-modules", Action: "apply", Intent: fixtureIntent(t, "all-modules.json")}

	t.Run("our templates pass", func(t *testing.T) {
		res := eval(t, e, Input{Plan: all, Grape: meta})
		assert.Empty(t, res.Verdicts)
		assert.Equal(t, 7, res.Rules, "rule definitions of the pack (TestRulesListing)")
	})

	t.Run("an intent tag the resources lack", func(t *testing.T) {
		m := meta
		m.Intent = json.RawMessage(`{"tags": {"team": "platform", "cost-center": "1234", "owner": "payments"}, "environment": "staging"}`)
		res := eval(t, e, Input{Plan: all, Grape: m})
		denies := messages(res, KindDeny)
		assert.Len(t, denies, taggable(t, all), "every taggable resource the plan creates")
		for _, msg := range denies {
			assert.Contains(t, msg, "lacks the intent's tags owner:")
		}
		assert.Equal(t, "grape-default/tags.rego", res.Verdicts[0].File)
		assert.Equal(t, "grape.defaults.tags", res.Verdicts[0].Package)
		assert.Equal(t, "deny_missing_tags", res.Verdicts[0].Rule)
	})

	t.Run("a publicly accessible database and SSH open to the world", func(t *testing.T) {
		plan := editPlan(t, all, func(rc map[string]any) {
			after := rc["change"].(map[string]any)["after"].(map[string]any)
			switch rc["type"] {
			case "aws_db_instance":
				after["publicly_accessible"] = true
			case "aws_security_group":
				after["ingress"] = append(after["ingress"].([]any), map[string]any{
					"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": []any{"0.0.0.0/0"},
				})
			}
		})
		res := eval(t, e, Input{Plan: plan, Grape: meta})
		assert.Equal(t, []string{
			"module.rds[0].aws_security_group.this admits SSH (port 22) from 0.0.0.0/0: allow only known networks, or reach hosts through SSM Session Manager or a bastion",
			"module.rds[0].aws_db_instance.this is publicly accessible: set publicly_accessible = false and reach the database from inside the VPC",
		}, messages(res, KindDeny))
		assert.True(t, res.Denied())
		assert.Equal(t, "module.rds[0].aws_security_group.this admits SSH (port 22) from 0.0.0.0/0: allow only known networks, or reach hosts through SSM Session Manager or a bastion", res.FirstDenial())
	})

	t.Run("a VPC replacement needs approval", func(t *testing.T) {
		res := eval(t, e, Input{Plan: readFixture(t, "plan-vpc-replace.json"), Grape: Meta{Cluster: "eu-1", Config: "vpc", Action: "apply", Intent: fixtureIntent(t, "vpc.json")}})
		assert.Equal(t, []string{"module.vpc[0].aws_vpc.this will be replaced (destroyed and created again): approve only if losing it (and everything in it) is intended"}, messages(res, KindWarn))
		assert.False(t, res.Denied())
		assert.True(t, res.Warned())
	})

	t.Run("a destroy needs approval", func(t *testing.T) {
		res := eval(t, e, Input{Plan: readFixture(t, "plan-vpc-destroy.json"), Grape: Meta{Cluster: "eu-1", Config: "vpc", Action: "destroy", Intent: fixtureIntent(t, "vpc.json")}})
		assert.Equal(t, []string{"module.vpc[0].aws_vpc.this will be destroyed: approve only if losing it (and everything in it) is intended"}, messages(res, KindWarn))
		assert.Equal(t, 0, res.Denies)
	})
}

// taggable counts the managed resources a plan creates or updates that have
// a tags_all attribute.
func taggable(t testing.TB, plan []byte) int {
	var p struct {
		ResourceChanges []struct {
			Mode   string `json:"mode"`
			Change struct {
				Actions []string       `json:"actions"`
				After   map[string]any `json:"after"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	require.NoError(t, json.Unmarshal(plan, &p))
	n := 0
	for _, rc := range p.ResourceChanges {
		if _, ok := rc.Change.After["tags_all"]; ok && rc.Mode == "managed" {
			n++
		}
	}
	require.Greater(t, n, 25)
	return n
}

// editPlan changes each resource change of a plan.
func editPlan(t testing.TB, plan []byte, edit func(rc map[string]any)) []byte {
	t.Helper()
	var p map[string]any
	require.NoError(t, json.Unmarshal(plan, &p))
	for _, rc := range p["resource_changes"].([]any) {
		edit(rc.(map[string]any))
	}
	b, err := json.Marshal(p)
	require.NoError(t, err)
	return b
}

// TestMessagesAreRedacted: a message that quotes a sensitive plan value, or
// a secret the agent knows, never leaves Evaluate in clear.
func TestMessagesAreRedacted(t *testing.T) {
	const agentSecret = "agent-env-secret-0123456789"
	e, _ := dirEngine(t, Options{}, map[string]string{"leak.rego": `package main

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_db_instance"
	msg := sprintf("password %s, variable %s", [rc.change.after.password, input.variables.rds_master_password.value])
}

warn contains sprintf("requested by %s", [input.grape.requested_by])
`})
	plan := readFixture(t, "plan-all-modules.json")
	require.Contains(t, string(plan), fixturePassword, "the fixture holds the value in clear, as real plans do")
	res := eval(t, e, Input{Plan: plan, Grape: Meta{RequestedBy: "ci " + agentSecret}, Redact: func(s string) string {
		return strings.ReplaceAll(s, agentSecret, "***")
	}})
	assert.Equal(t, []string{"password ***, variable ***"}, messages(res, KindDeny))
	assert.Equal(t, []string{"requested by ci ***"}, messages(res, KindWarn))
	b, err := json.Marshal(res)
	require.NoError(t, err)
	assert.NotContains(t, string(b), fixturePassword)
	assert.NotContains(t, string(b), agentSecret)

	// An evaluation error quoting a value goes through the same masks.
	e, _ = dirEngine(t, Options{}, map[string]string{"bad.rego": `package main

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_db_instance"
	msg := sprintf("%d", [to_number(rc.change.after.password)])
}
`})
	_, err = e.Evaluate(context.Background(), Input{Plan: plan})
	var ee *EvalError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, ReasonBuiltin, ee.Reason)
	assert.NotContains(t, err.Error(), fixturePassword)
	assert.NotContains(t, errors.Unwrap(err).Error(), fixturePassword)
}

func TestSensitiveStrings(t *testing.T) {
	plan, err := decodeValue(readFixture(t, "plan-all-modules.json"))
	require.NoError(t, err)
	got := sensitiveStrings(plan.(ast.Object))
	assert.Contains(t, got, fixturePassword)
	// Only marked values: the plan's ordinary strings stay out.
	assert.NotContains(t, got, "orders")
	assert.NotContains(t, got, "eu-1")
}

// TestConftestConventions: a team's existing conftest policies work as
// they do under conftest.
func TestConftestConventions(t *testing.T) {
	plan := []byte(`{"resource_changes": [{"address": "aws_s3_bucket.logs", "type": "aws_s3_bucket", "mode": "managed", "change": {"actions": ["create"], "after": {"bucket": "logs"}}}]}`)
	e, dir := dirEngine(t, Options{}, map[string]string{
		"s3.rego": `package main

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_s3_bucket"
	msg := sprintf("%s: buckets need versioning", [rc.address])
}

violation_acl contains {"msg": "no ACL set", "details": {"bucket": "logs"}} if true

warn_naming contains msg if {
	some rc in input.resource_changes
	not startswith(rc.change.after.bucket, "acme-")
	msg := sprintf("%s: bucket names start with acme-", [rc.address])
}

exception contains rules if {
	input.resource_changes[_].change.after.bucket == "logs"
	rules := ["acl"]
}
`,
		"other.rego": `package main

# A second file adds to deny: its message is traced to this file.
deny contains "from the second file" if true
`,
		"helpers/ignored.rego": `package lib

deny contains "not in the namespace" if true
`,
		"s3_test.rego": `package main

test_deny if count(deny) == 2
`,
	})
	res := eval(t, e, Input{Plan: plan})
	require.Len(t, res.Verdicts, 3)
	assert.Equal(t, Verdict{Kind: KindDeny, Rule: "deny", Package: "main", File: filepath.Join(dir, "other.rego"), Line: 4, Msg: "from the second file"}, res.Verdicts[0])
	assert.Equal(t, Verdict{Kind: KindDeny, Rule: "deny", Package: "main", File: filepath.Join(dir, "s3.rego"), Line: 3, Msg: "aws_s3_bucket.logs: buckets need versioning"}, res.Verdicts[1])
	assert.Equal(t, Verdict{Kind: KindWarn, Rule: "warn_naming", Package: "main", File: filepath.Join(dir, "s3.rego"), Line: 11, Msg: "aws_s3_bucket.logs: bucket names start with acme-"}, res.Verdicts[2])
	assert.Equal(t, []Exception{{Package: "main", Rule: "violation_acl", Dropped: 1}}, res.Exceptions)
	assert.Equal(t, 2, res.Denies)
	assert.Equal(t, 1, res.Warnings)

	// Another namespace: package main is then not judged.
	e, _ = dirEngine(t, Options{Namespaces: []string{"terraform.aws"}}, map[string]string{
		"a.rego": "package terraform.aws\n\ndeny contains \"aws\" if true\n",
		"b.rego": "package main\n\ndeny contains \"main\" if true\n",
	})
	assert.Equal(t, []string{"aws"}, messages(eval(t, e, Input{Plan: plan}), KindDeny))

	// Pre-1.0 syntax, with --policy-rego-version v0.
	e, _ = dirEngine(t, Options{RegoVersion: "v0"}, map[string]string{
		"old.rego": "package main\n\ndeny[msg] {\n\tinput.resource_changes[_].type == \"aws_s3_bucket\"\n\tmsg := \"old style\"\n}\n",
	})
	assert.Equal(t, []string{"old style"}, messages(eval(t, e, Input{Plan: plan}), KindDeny))
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"parse error", "package main\n\ndeny contains msg if {\n\tmsg := \n}\n", []string{"bad.rego:5: rego_parse_error: unexpected } token"}},
		{"v0 syntax under v1", "package main\n\ndeny[msg] {\n\tmsg := \"x\"\n}\n", []string{"bad.rego:3: rego_parse_error: `if` keyword is required before rule body"}},
		{"unsafe variable", "package main\n\ndeny contains msg if {\n\tx := 1\n\tmsg := y\n}\n", []string{"bad.rego:5: rego_unsafe_var_error: var y is unsafe"}},
		{"network builtin", "package main\n\ndeny contains msg if {\n\tresp := http.send({\"method\": \"POST\", \"url\": \"https://x.example\", \"body\": input})\n\tmsg := resp.body\n}\n", []string{"bad.rego:4: rego_type_error: http.send is not allowed in Grape policies: it could send the plan out of the agent"}},
		{"dns builtin", "package main\n\ndeny contains msg if {\n\tnet.lookup_ip_addr(\"x.example\")\n\tmsg := \"x\"\n}\n", []string{"bad.rego:4: rego_type_error: net.lookup_ip_addr is not allowed in Grape policies"}},
		{"environment builtin", "package main\n\nwarn contains msg if {\n\tmsg := opa.runtime().env.AWS_SECRET_ACCESS_KEY\n}\n", []string{"bad.rego:4: rego_type_error: opa.runtime is not allowed in Grape policies"}},
		{"boolean deny", "package main\n\ndeny := true\n", []string{"bad.rego:3: grape_rule_shape: deny in package main must be a set of messages, as conftest reads it: write `deny contains msg if { … }`"}},
		{"object deny", "package main\n\nwarn_x[msg] if {\n\tmsg := \"x\"\n}\n", []string{"bad.rego:3: grape_rule_shape: warn_x in package main must be a set"}},
		{"empty file", "", []string{"bad.rego: rego_parse_error: empty module"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"ok.rego": "package main\n\ndeny contains \"x\" if false\n", "bad.rego": tc.src})
			_, err := Load(context.Background(), Sources{Dirs: []string{dir}}, Options{})
			var ce *CompileError
			require.ErrorAs(t, err, &ce)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), filepath.Join(dir, w))
			}
			assert.NotContains(t, err.Error(), "ok.rego")
		})
	}
	// A broken file inside a set stops start-up too.
	dir := writeFiles(t, map[string]string{"ok.rego": "package main\n", "sets/pci/bad.rego": "package main\n\ndeny contains if\n"})
	_, err := Load(context.Background(), Sources{Dirs: []string{dir}}, Options{})
	require.ErrorContains(t, err, filepath.Join(dir, "sets/pci/bad.rego")+":3: rego_parse_error")
	// A test file that does not compile does not stop the agent (it never loads tests).
	dir = writeFiles(t, map[string]string{"ok.rego": "package main\n", "ok_test.rego": "package main\n\ntest_x if {\n"})
	_, err = Load(context.Background(), Sources{Dirs: []string{dir}}, Options{})
	assert.NoError(t, err)
}

func TestEvalErrors(t *testing.T) {
	plan := []byte(`{"resource_changes": [{"address": "a.b", "type": "a", "mode": "managed", "change": {"actions": ["create"], "after": {"n": "abc"}}}]}`)
	for _, tc := range []struct {
		name, src string
		timeout   time.Duration
		reason    EvalReason
		want      string
	}{
		{"conflict", "package main\n\nsize := 1 if true\n\nsize := 2 if true\n\ndeny contains \"x\" if size > 0\n", 0, ReasonConflict, "bad.rego:5: eval_conflict_error: rule data.main.size produced conflicting values"},
		{"builtin error", "package main\n\ndeny contains msg if {\n\tsome rc in input.resource_changes\n\tmsg := sprintf(\"%d\", [to_number(rc.change.after.n)])\n}\n", 0, ReasonBuiltin, "bad.rego:5: eval_builtin_error: to_number"},
		{"type error", "package main\n\ndeny contains msg if {\n\tmsg := concat(\",\", input.resource_changes[0].change.after.n)\n}\n", 0, ReasonType, "bad.rego:4: eval_type_error: concat"},
		{"runaway loop", "package main\n\ndeny contains msg if {\n\tsome i in numbers.range(1, 100000)\n\tsome j in numbers.range(1, 100000)\n\ti * j == -1\n\tmsg := \"never\"\n}\n", 300 * time.Millisecond, ReasonTimeout, "did not finish within 300ms (--policy-timeout)"},
		{"message of the wrong shape", "package main\n\ndeny contains 42 if true\n", 0, ReasonMessage, "bad.rego:3: deny: a message must be a string or an object with a string \"msg\", not a number"},
		{"object without msg", "package main\n\nwarn contains {\"message\": \"x\"} if true\n", 0, ReasonMessage, `bad.rego:3: warn: an object message needs a string "msg" key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, dir := dirEngine(t, Options{Timeout: tc.timeout}, map[string]string{"bad.rego": tc.src})
			res, err := e.Evaluate(context.Background(), Input{Plan: plan})
			assert.Nil(t, res)
			var ee *EvalError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.reason, ee.Reason)
			assert.Contains(t, err.Error(), strings.ReplaceAll(tc.want, "bad.rego", filepath.Join(dir, "bad.rego")))
		})
	}

	e, _ := dirEngine(t, Options{}, map[string]string{"a.rego": "package main\n\ndeny contains \"x\" if true\n"})
	for _, bad := range []string{``, `[1]`, `{"a": 1} {}`} {
		_, err := e.Evaluate(context.Background(), Input{Plan: []byte(bad)})
		var ee *EvalError
		require.ErrorAs(t, err, &ee, "%q", bad)
		assert.Equal(t, ReasonInput, ee.Reason)
	}

	// The caller's cancellation is not a timeout.
	e, _ = dirEngine(t, Options{}, map[string]string{"slow.rego": "package main\n\ndeny contains \"x\" if {\n\tsome i in numbers.range(1, 100000)\n\tsome j in numbers.range(1, 100000)\n\ti * j == -1\n}\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.Evaluate(ctx, Input{Plan: plan})
	var ee *EvalError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, ReasonCancelled, ee.Reason)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestSets: files under sets/<name>/ judge only configs of that set.
func TestSets(t *testing.T) {
	files := map[string]string{
		"common.rego":          "package main\n\ndeny contains \"common\" if input.grape.action == \"destroy\"\n\nwarn contains \"everyone\" if true\n",
		"common_test.rego":     "package main\n\ntest_x if true\n",
		"sets/pci/pci.rego":    "package main\n\nwarn contains \"pci only\" if true\n",
		"sets/pci/lib/x.rego":  "package pci.lib\n\nhelper := 1\n",
		"sets/dev-1/dev.rego":  "package main\n\nwarn contains \"dev only\" if true\n",
		"docs/not-policy.md":   "# notes",
		".hidden/ignored.rego": "not even rego",
	}
	e, _ := dirEngine(t, Options{}, files)
	assert.Equal(t, []string{"", "dev-1", "pci"}, e.Sets())
	plan := []byte(`{"resource_changes": []}`)
	assert.Equal(t, []string{"everyone"}, messages(eval(t, e, Input{Plan: plan}), KindWarn))
	assert.Equal(t, []string{"pci only", "everyone"}, messagesSorted(eval(t, e, Input{Set: "pci", Plan: plan}), KindWarn))

	_, err := e.Evaluate(context.Background(), Input{Set: "sox", Plan: plan})
	var us *UnknownSetError
	require.ErrorAs(t, err, &us)
	require.EqualError(t, err, `policy set "sox" is not among this agent's policies (sets: dev-1, pci): add sets/sox/ to a policy source, or clear the config's policy set`)

	// The digest depends on the files, not where they are, nor on tests.
	d1, _ := e.Digest("")
	dp, _ := e.Digest("pci")
	assert.NotEqual(t, d1, dp)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, d1)
	files["common_test.rego"] = "package main\n\ntest_y if true\n"
	e2, _ := dirEngine(t, Options{}, files)
	d2, _ := e2.Digest("")
	assert.Equal(t, d1, d2, "another checkout of the same policies")
	files["common.rego"] += "\n"
	e3, _ := dirEngine(t, Options{}, files)
	d3, _ := e3.Digest("")
	assert.NotEqual(t, d1, d3)

	// A stray file directly under sets/, or a bad set name, is refused.
	_, err = Load(context.Background(), Sources{Dirs: []string{writeFiles(t, map[string]string{"sets/x.rego": "package main\n"})}}, Options{})
	require.ErrorContains(t, err, "files under sets/ belong in a set's directory, sets/<set>/x.rego")
	_, err = Load(context.Background(), Sources{Dirs: []string{writeFiles(t, map[string]string{"sets/PCI/x.rego": "package main\n"})}}, Options{})
	assert.ErrorContains(t, err, `policy set "PCI": use 1-63 lowercase letters`)
}

func messagesSorted(r *Result, kind Kind) []string {
	out := messages(r, kind)
	// Verdicts sort by file: sets/pci/pci.rego after common.rego.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func TestRulesListing(t *testing.T) {
	e := defaultEngine(t, Options{})
	var got []string
	for _, r := range e.Rules("") {
		got = append(got, string(r.Kind)+" "+r.Package+"."+r.Name+" "+r.File)
		assert.True(t, r.Default)
		assert.Positive(t, r.Line)
	}
	assert.Equal(t, []string{
		"warn grape.defaults.approval.warn_protected_delete grape-default/approval.rego",
		"deny grape.defaults.network.deny_admin_port_open grape-default/network.rego",
		"deny grape.defaults.network.deny_admin_port_open grape-default/network.rego",
		"deny grape.defaults.network.deny_admin_port_open grape-default/network.rego",
		"deny grape.defaults.rds.deny_public grape-default/rds.rego",
		"deny grape.defaults.rds.deny_unencrypted grape-default/rds.rego",
		"deny grape.defaults.tags.deny_missing_tags grape-default/tags.rego",
	}, got)
	// The pack is judged whatever namespace the team's policies use.
	e = defaultEngine(t, Options{Namespaces: []string{"terraform"}})
	assert.Len(t, e.Rules(""), 7)
}

func TestEmptyEngine(t *testing.T) {
	e, err := Compile(context.Background(), nil, Options{})
	require.NoError(t, err)
	res := eval(t, e, Input{Plan: []byte(`{}`)})
	assert.Empty(t, res.Verdicts)
	assert.Equal(t, 0, res.Rules)
}
