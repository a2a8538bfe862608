package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// cli runs grape in-process with the given environment.
type cli struct {
	t   *testing.T
	env map[string]string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	return &cli{t: t, env: map[string]string{"GRAPE_DATABASE_URL": testsupport.DatabaseURL(t)}}
}

func (c *cli) run(stdin string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = run(ctx, args, &cmdIO{stdout: &out, stderr: &errb, stdin: strings.NewReader(stdin), getenv: func(k string) string { return c.env[k] }})
	return out.String(), errb.String(), code
}

func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run("", args...)
	require.Equal(c.t, 0, code, "grape %v failed: %s", args, errOut)
	return strings.TrimSpace(out)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// TestQueueAndRunOnce drives the whole product through the CLI: a plan of a
// VPC config, rendered, committed, and planned by terraform against moto.
// Not parallel: the agent passes its own environment (AWS_*) to terraform.
func TestQueueAndRunOnce(t *testing.T) {
	moto := testsupport.Moto(t)
	for k, v := range moto.Env("eu-central-1") {
		t.Setenv(k, v)
	}
	c := newCLI(t)
	c.ok("migrate")
	created := c.ok("cluster", "create", "eu-1")
	require.Equal(t, "eu-1", strings.Split(created, "\n")[0])
	require.Contains(t, created, "grape_agent_eu_1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	cfgID := c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", spec)
	require.Len(t, cfgID, 36)

	// `deploy --follow` queues and then tails the log until the end; it is
	// started before any agent runs.
	type result struct {
		out  string
		code int
	}
	followed := make(chan result, 1)
	go func() {
		out, _, code := c.run("", "deploy", "--cluster", "eu-1", "--config", "prod", "--action", "plan", "--follow")
		followed <- result{out, code}
	}()
	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	var depID string
	require.Eventually(t, func() bool {
		// Eventually runs this on another goroutine: no require here.
		ds, err := st.ListDeployments(context.Background(), store.ListFilter{ClusterID: "eu-1"})
		if err == nil && len(ds) == 1 {
			depID = ds[0].ID.String()
		}
		return depID != ""
	}, 10*time.Second, 50*time.Millisecond)
	require.Contains(t, c.ok("status", depID), "queued")

	c.ok("agent", "--cluster", "eu-1", "--once", "--agent-id", "test-agent", "--data-dir", t.TempDir(),
		"--provider-mirror", testsupport.ProviderMirror, "--log-format", "text", "--metrics-listen", "")
	status := c.ok("status", depID)
	require.Regexp(t, `status:\s+succeeded`, status)
	require.Regexp(t, `commit:\s+[0-9a-f]{40}`, status)
	logs := c.ok("logs", depID)
	require.Contains(t, logs, "claimed by agent test-agent")
	require.Contains(t, logs, "Plan: 19 to add, 0 to change, 0 to destroy.")
	require.Contains(t, logs, "[grape] succeeded")

	// The follower saw every line exactly once, after the id, and exited 0.
	select {
	case r := <-followed:
		require.Equal(t, 0, r.code, r.out)
		// First the id, then where the deployment stood if the follower
		// looked while it was still queued (the agent may claim it first
		// on a loaded machine), then every log line once.
		queued := "[grape] deployment " + depID + " is queued: 1st in config prod's queue; no agent of cluster eu-1 is online: it runs when one starts (grape agent --cluster eu-1)\n"
		out := strings.TrimPrefix(r.out, depID+"\n")
		require.NotEqual(t, r.out, out, "the follower prints the id first")
		out = strings.TrimPrefix(out, queued)
		require.Equal(t, logs+"\n", out)
	case <-time.After(30 * time.Second):
		t.Fatal("deploy --follow did not return after the deployment ended")
	}

	// A deployment that does not succeed makes --follow exit non-zero.
	cancelled := c.ok("deploy", "--cluster", "eu-1", "--config", "prod")
	c.ok("cancel", cancelled)
	out, _, code := c.run("", "logs", cancelled, "--follow")
	require.Equal(t, 1, code)
	require.Contains(t, out, "ended cancelled")

	// Flags also come from GRAPE_* variables.
	c.env["GRAPE_CLUSTER"] = "eu-1"
	c.env["GRAPE_CONFIG"] = cfgID
	require.Len(t, c.ok("deploy"), 36)
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("cluster", "create", "eu-1")
	good := writeFile(t, "good.json", `{"modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", good)

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"malformed json", []string{"config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", writeFile(t, "bad.json", `{"modules": {`)}, 1, "intent"},
		{"unknown cluster on apply", []string{"config", "apply", "--cluster", "nope", "--name", "prod", "-f", good}, 1, `cluster "nope" does not exist: create it with ` + "`grape cluster create nope`"},
		{"unknown config", []string{"deploy", "--cluster", "eu-1", "--config", "staging"}, 1, `config "staging" does not exist in cluster eu-1`},
		{"unknown cluster on deploy", []string{"deploy", "--cluster", "mars", "--config", "prod"}, 1, `cluster "mars" does not exist`},
		{"wrong action", []string{"deploy", "--cluster", "eu-1", "--config", "prod", "--action", "yolo"}, 2, `--action: action "yolo": invalid: use plan, apply or destroy`},
		{"bad cluster id", []string{"cluster", "create", "../etc"}, 2, "cluster id"},
		{"bad config name", []string{"config", "apply", "--cluster", "eu-1", "--name", "../x", "-f", good}, 2, "--name"},
		{"not a uuid", []string{"status", "abc"}, 2, `deployment id "abc" is not a UUID`},
		{"unknown command", []string{"explode"}, 2, `unknown command "explode"`},
		{"bad flag", []string{"deploy", "--nope"}, 2, "flag provided but not defined"},
		{"bad env value", []string{"agent", "--cluster", "eu-1"}, 2, ""},
		{"bad metrics address", []string{"agent", "--cluster", "eu-1", "--concurrency", "1", "--metrics-listen", "9810"}, 2, `--metrics-listen: want HOST:PORT (e.g. 127.0.0.1:9810), got "9810"`},
	}
	c.env["GRAPE_CONCURRENCY"] = "lots"
	for _, tc := range cases {
		_, errOut, code := c.run("", tc.args...)
		require.Equal(t, tc.code, code, "%s: %s", tc.name, errOut)
		require.Contains(t, errOut, tc.msg, tc.name)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "%s: one line of error, got %q", tc.name, errOut)
	}
	_, errOut, _ := c.run("", "agent", "--cluster", "eu-1")
	require.Contains(t, errOut, `GRAPE_CONCURRENCY: invalid value for --concurrency`)

	// Nothing was queued or changed by any of it.
	out := c.ok("status")
	require.NotContains(t, out, "queued")
	hist := c.ok("config", "history", "--cluster", "eu-1", "prod")
	require.Equal(t, 2, strings.Count(hist, "\n")+1, "one header and one version")
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, env: map[string]string{}}
	for _, cmd := range commands {
		if cmd.flags == nil {
			continue
		}
		args := append(strings.Fields(cmd.name), "--help")
		_, errOut, code := c.run("", args...)
		require.Equal(t, 0, code, cmd.name)
		require.Contains(t, errOut, "Usage: grape "+cmd.name, cmd.name)
	}
}

var update = flag.Bool("update", false, "rewrite generated files (docs/cli.md, supabase/migrations)")

// TestGeneratedFilesAreCurrent keeps the CLI reference and the Supabase
// migrations equal to what the code generates.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	want := map[string][]byte{filepath.Join(root, "docs", "cli.md"): cliReference()}
	migs, err := store.Migrations()
	require.NoError(t, err)
	for _, m := range migs {
		want[filepath.Join(root, "supabase", "migrations", m.SupabaseFile())] = []byte(m.SQL)
	}
	for path, content := range want {
		if *update {
			require.NoError(t, os.WriteFile(path, content, 0o644))
			continue
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err, "%s is missing: run make generate", path)
		require.Equal(t, string(content), string(got), "%s is stale: run make generate (or go test ./cmd/grape -run Generated -update)", path)
	}
	entries, err := os.ReadDir(filepath.Join(root, "supabase", "migrations"))
	require.NoError(t, err)
	require.Len(t, entries, len(migs), "supabase/migrations holds a file that is no migration")
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("cluster", "create", "eu-1")
	c.env["GRAPE_CONFIG_FILE"] = writeFile(t, "grape.conf", "# agent settings\ncluster = eu-1\nGRAPE_CONFIG=nope\n")
	_, errOut, code := c.run("", "deploy")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `config "nope" does not exist in cluster eu-1`)

	c.env["GRAPE_CONFIG_FILE"] = writeFile(t, "bad.conf", "clustr = eu-1\n")
	_, errOut, code = c.run("", "deploy")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `"clustr" is not a grape flag`)
}
