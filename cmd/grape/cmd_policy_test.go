package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/policy"
)

// policyDir writes policy files under a new directory.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return dir
}

func offlineCLI(t *testing.T, env map[string]string) *cli {
	if env == nil {
		env = map[string]string{}
	}
	return &cli{t: t, env: env}
}

func TestPolicyTestCommand(t *testing.T) {
	c := offlineCLI(t, nil)
	out, errOut, code := c.run("", "policy", "test")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `^PASS: (\d+)/(\d+)\n$`, out, "the default pack's tests")

	dir := policyDir(t, map[string]string{
		"p.rego":      "package main\n\ndeny contains \"always\" if true\n",
		"p_test.rego": "package main\n\ntest_ok if count(deny) == 1\n\ntest_wrong if {\n\tprint(\"deny is\", deny)\n\tcount(deny) == 0\n}\n",
	})
	out, _, code = c.run("", "policy", "test", dir)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "FAIL "+filepath.Join(dir, "p_test.rego")+":5 main.test_wrong: failed")
	assert.Contains(t, out, `    deny is {"always"}`, "a failing test shows what it printed")
	assert.Contains(t, out, "PASS: 1/2")

	out, _, code = c.run("", "policy", "test", policyDir(t, map[string]string{"p.rego": "package main\n"}))
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "no tests found")
}

func TestPolicyEvalCommand(t *testing.T) {
	plan := filepath.Join("..", "..", "policy", "testdata", "plan-all-modules.json")
	intent := filepath.Join("..", "..", "policy", "testdata", "intents", "all-modules.json")
	c := offlineCLI(t, nil)

	// Our own templates pass the default pack.
	out, errOut, code := c.run("", "policy", "eval", "--plan-json", plan, "--cluster", "eu-1", "--config", "all-modules", "--intent", intent)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `^7 rules: 0 failures, 0 warnings, 0 exceptions \(policies sha256:[0-9a-f]{64}\)\n$`, out)

	// A team's policy that denies: exit 1, conftest's FAIL lines, masked secrets.
	dir := policyDir(t, map[string]string{"rds.rego": `package main

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_db_instance"
	msg := sprintf("%s: no master passwords in plans (got %s)", [rc.address, rc.change.after.password])
}
`})
	out, _, code = c.run("", "policy", "eval", "--plan-json", plan, "--policy-dir", dir, "--default-policies=false")
	assert.Equal(t, 1, code)
	assert.Equal(t, "FAIL - "+filepath.Join(dir, "rds.rego")+":3 - module.rds[0].aws_db_instance.this: no master passwords in plans (got ***)\n", firstLine(out))
	assert.NotContains(t, out, "fixture-password")

	out, _, code = c.run("", "policy", "eval", "--plan-json", plan, "--policy-dir", dir, "--default-policies=false", "--json")
	assert.Equal(t, 1, code)
	var res policy.Result
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, 1, res.Denies)
	assert.Equal(t, "deny", string(res.Verdicts[0].Kind))

	// From stdin, policies from the environment as an agent reads them.
	planJSON, err := os.ReadFile(plan)
	require.NoError(t, err)
	c = offlineCLI(t, map[string]string{"GRAPE_POLICY_DIR": dir, "GRAPE_DEFAULT_POLICIES": "false"})
	_, _, code = c.run(string(planJSON), "policy", "eval", "--plan-json", "-")
	assert.Equal(t, 1, code)

	_, errOut, code = c.run("", "policy", "eval")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--plan-json FILE is required")
	_, errOut, code = c.run("{", "policy", "eval", "--plan-json", "-")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "the plan is not valid JSON")
}

func TestPolicyListCommand(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"main.rego":         "package main\n\nwarn contains \"x\" if false\n",
		"sets/pci/pci.rego": "package main\n\ndeny_pci contains \"x\" if false\n",
	})
	c := offlineCLI(t, nil)
	out := c.ok("policy", "list", "--policy-dir", dir, "--default-policies=false")
	assert.Contains(t, out, "every config: 1 files, 1 rules, sha256:")
	assert.Contains(t, out, "policy set pci: 2 files, 2 rules, sha256:")
	assert.Contains(t, out, filepath.Join(dir, "sets/pci/pci.rego")+":3  main     deny_pci  deny")

	// A policy that does not compile: the error an agent would refuse to start with.
	bad := policyDir(t, map[string]string{"bad.rego": "package main\n\ndeny contains msg if {\n\tmsg := http.send({})\n}\n"})
	_, errOut, code := c.run("", "policy", "list", "--policy-dir", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "loading policies: policies do not compile: "+filepath.Join(bad, "bad.rego")+":4: rego_type_error: http.send is not allowed in Grape policies")

	_, errOut, code = c.run("", "policy", "list", "--policy-rego-version", "v2")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--policy-rego-version: want v1 or v0")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line + "\n"
}
