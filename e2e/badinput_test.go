package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// TestBadInput runs the bad-input corpus of testdata/badinput (issue 8)
// against the real binary, database and agent: bad intents through `grape
// config apply`, bad command lines of the CLI and the agent, and rows a
// front end writes straight into the tables — some refused by the database,
// some accepted by it and left to the agent, among them intents that
// bypassed the CLI's validation. Every case must get exactly one clear
// error, store or apply nothing, and leave the agent running.
func TestBadInput(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	base := e.config("base", `{"region": "eu-central-1", "modules": {}}`)
	_, err := e.st.CreateCluster(e.ctx, "other", "")
	require.NoError(t, err)
	other, err := e.st.UpsertConfig(e.ctx, "other", "web", []byte(`{"region": "eu-central-1", "modules": {}}`), store.ConfigSettings{})
	require.NoError(t, err)
	vars := map[string]string{"Cluster": e.cluster, "Config": base.ID.String(), "OtherConfig": other.ID.String(),
		"Intent": writeTemp(t, `{"region": "eu-central-1", "modules": {}}`)}

	// CLI cases run in parallel: each is a process start (~0.7 s with the
	// race detector, most of it package init).
	var mu sync.Mutex
	var tried, asExpected int
	count := func(t *testing.T) {
		mu.Lock()
		tried++
		mu.Unlock()
		t.Cleanup(func() {
			if !t.Failed() {
				mu.Lock()
				asExpected++
				mu.Unlock()
			}
		})
	}

	// Cases the agent has to deal with: queued together, checked at the end.
	var viaAgent []agentCase

	t.Run("intents", func(t *testing.T) {
		for i, c := range readCorpus(t, "intents.txt") {
			t.Run(c.name, func(t *testing.T) {
				// Accepted cases store a config: they run first, one by
				// one, so the parallel refusals can compare row counts.
				if _, ok := c.kv["accept"]; !ok {
					t.Parallel()
				}
				count(t)
				body := c.intentBody(t)
				name := fmt.Sprintf("intent-%02d", i)
				path := filepath.Join(t.TempDir(), "intent.json")
				require.NoError(t, os.WriteFile(path, body, 0o644))
				before := e.rowCounts()
				stdout, stderr, err := e.grapeWithin(time.Minute, "config", "apply", "--cluster", e.cluster, "--name", name, "-f", path)
				if literal, ok := c.kv["accept"]; ok {
					require.NoError(t, err, "a legal intent was refused: %s", stderr)
					cfg, err := e.st.GetConfig(e.ctx, e.cluster, name)
					require.NoError(t, err)
					require.Equal(t, cfg.ID.String(), strings.TrimSpace(stdout))
					require.Contains(t, string(cfg.Spec), literal, "the literal must be stored exactly as written")
					return
				}
				requireOneError(t, err, 1, stderr, c.kv["want"])
				require.Equal(t, before, e.rowCounts(), "a refused intent stored something")
				if want, ok := c.kv["database"]; ok {
					_, err := e.pool.Exec(e.ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ($1, $2, $3::jsonb)`, e.cluster, name, string(body))
					require.ErrorContains(t, err, want, "a front end's direct INSERT")
					require.Equal(t, before, e.rowCounts(), "a refused row was stored")
				}
				if want, ok := c.kv["agent"]; ok {
					if want == "yes" {
						want = strings.TrimPrefix(c.kv["want"], "grape config apply: ")
					}
					mu.Lock()
					viaAgent = append(viaAgent, agentCase{name: "intent " + c.name, spec: body, status: store.StatusFailed, kind: store.KindBadConfig, want: want})
					mu.Unlock()
				}
			})
		}
	})

	t.Run("flags", func(t *testing.T) {
		for _, c := range readCorpus(t, "flags.txt") {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				count(t)
				args := strings.Fields(fill(t, c.kv["args"], vars))
				exit, err := strconv.Atoi(c.kv["exit"])
				require.NoError(t, err)
				before := e.rowCounts()
				_, stderr, err := e.grapeWithin(30*time.Second, args...)
				requireOneError(t, err, exit, stderr, fill(t, c.kv["want"], vars))
				require.Equal(t, before, e.rowCounts(), "a refused command changed the database")
			})
		}
	})

	t.Run("tables", func(t *testing.T) {
		for _, c := range readCorpus(t, "tables.txt") {
			t.Run(c.name, func(t *testing.T) {
				count(t)
				sql := fill(t, c.kv["sql"], vars)
				if want, ok := c.kv["want"]; ok {
					before := e.rowCounts()
					_, err := e.pool.Exec(e.ctx, sql)
					require.Error(t, err, "the database accepted: %s", sql)
					require.Contains(t, err.Error(), want)
					require.NotContains(t, err.Error(), "\n")
					require.Equal(t, before, e.rowCounts(), "a refused row was stored")
					return
				}
				status, kind, want, ok := cut3(c.kv["agent"])
				require.True(t, ok, "agent: wants <status> <kind> <error>")
				var id uuid.UUID
				require.NoError(t, e.pool.QueryRow(e.ctx, sql).Scan(&id))
				viaAgent = append(viaAgent, agentCase{name: "row " + c.name, id: id, status: store.Status(status), kind: store.ErrorKind(kind), want: want})
			})
		}
	})

	// Intents that bypassed the CLI, written straight into configs as a front
	// end could, and queued for apply.
	for i := range viaAgent {
		c := &viaAgent[i]
		if c.spec == nil {
			continue
		}
		var cfgID uuid.UUID
		require.NoError(t, e.pool.QueryRow(e.ctx, `INSERT INTO configs (cluster_id, name, spec) VALUES ($1, $2, $3::jsonb) RETURNING id`,
			e.cluster, fmt.Sprintf("direct-%02d", i), string(c.spec)).Scan(&cfgID), c.name)
		d, err := e.st.Enqueue(e.ctx, store.EnqueueParams{ClusterID: e.cluster, ConfigID: cfgID, Action: store.ActionApply, RequestedBy: "front-end"})
		require.NoError(t, err)
		c.id = d.ID
	}
	a := e.startAgent("agent-1", "--concurrency", "2")
	t.Run("agent", func(t *testing.T) {
		for _, c := range viaAgent {
			t.Run(c.name, func(t *testing.T) {
				count(t)
				got := e.wait(c.id, 2*time.Minute, c.status)
				require.Equal(t, c.kind, deref(got.ErrorKind))
				require.Contains(t, deref(got.Error), c.want)
				require.NotContains(t, deref(got.Error), "\n")
				lines := e.logs(c.id)
				requireGapless(t, lines)
				require.Zero(t, countLines(lines, "phase: init"), "terraform must not run")
				requireLine(t, lines, c.want) // the reason is in the log too
				if c.spec != nil {
					// An intent that bypassed the CLI: refused at render, with
					// its one validation error, before anything is committed.
					require.Equal(t, 1, countAgentPrefix(lines, "invalid intent: "), "one error:\n%s", joinLines(lines))
					require.Zero(t, countLines(lines, "phase: commit"))
					require.Nil(t, got.CommitSHA, "nothing committed")
				}
			})
		}
	})

	// The agent survived all of it and still works.
	ok := e.deploy(base, store.ActionPlan)
	e.wait(ok.ID, 2*time.Minute, store.StatusSucceeded)
	require.True(t, a.alive())
	require.Empty(t, a.records(t, "work panicked"))
	require.Zero(t, e.vpcCount(), "nothing was applied")
	t.Logf("bad input: %d cases tried, %d as expected (%d of them through the agent)", tried, asExpected, len(viaAgent))
}

// agentCase is a bad input only the agent can refuse: a row the database
// accepted.
type agentCase struct {
	name   string
	spec   []byte    // an intent to insert into configs directly, or nil
	id     uuid.UUID // the queued deployment
	status store.Status
	kind   store.ErrorKind
	want   string
}

// corpusCase is one case of a testdata/badinput file.
type corpusCase struct {
	name string
	kv   map[string]string
	body []byte
}

var corpusKey = regexp.MustCompile(`^(want|accept|agent|database|body|generate|args|exit|sql): (.*)$`)

// readCorpus parses a corpus file (format in testdata/badinput/README.md).
func readCorpus(t testing.TB, file string) []corpusCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "badinput", file))
	require.NoError(t, err)
	var out []corpusCase
	var body []string
	flush := func() {
		if len(out) > 0 {
			out[len(out)-1].body = []byte(strings.TrimSpace(strings.Join(body, "\n")))
		}
		body = nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch m := corpusKey.FindStringSubmatch(line); {
		case strings.HasPrefix(line, "== "):
			flush()
			out = append(out, corpusCase{name: strings.TrimPrefix(line, "== "), kv: map[string]string{}})
		case len(out) == 0:
			// comments before the first case
		case m != nil && len(body) == 0:
			out[len(out)-1].kv[m[1]] = m[2]
		default:
			body = append(body, line)
		}
	}
	flush()
	require.NotEmpty(t, out, "no cases in %s", file)
	return out
}

// intentBody is the bytes of an intent case.
func (c corpusCase) intentBody(t testing.TB) []byte {
	t.Helper()
	switch g := c.kv["generate"]; g {
	case "huge":
		return []byte(`{"region": "eu-central-1", "tags": {"a": "` + strings.Repeat("x", 10<<20) + `"}}`)
	case "deep":
		return []byte(`{"modules": {"vpc": {"availability_zones": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}}`)
	case "":
	default:
		t.Fatalf("unknown generator %q", g)
	}
	if q, ok := c.kv["body"]; ok {
		s, err := strconv.Unquote(q)
		require.NoError(t, err, "body: %s", q)
		return []byte(s)
	}
	return c.body
}

// requireOneError checks a refused command: the exit code, and exactly one
// line on stderr, holding want.
func requireOneError(t testing.TB, err error, exit int, stderr, want string) {
	t.Helper()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the command succeeded (or did not run: %v); stderr: %s", err, stderr)
	require.Equal(t, exit, ee.ExitCode(), "stderr: %s", stderr)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	require.Len(t, lines, 1, "exactly one error line, got:\n%s", stderr)
	require.Contains(t, lines[0], want)
}

// rowCounts counts the rows a refused input must not have added.
func (e *env) rowCounts() string {
	e.t.Helper()
	var c, v, d, k int
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM configs), (SELECT count(*) FROM config_versions),
  (SELECT count(*) FROM deployments), (SELECT count(*) FROM clusters)`).Scan(&c, &v, &d, &k))
	return fmt.Sprintf("configs %d, versions %d, deployments %d, clusters %d", c, v, d, k)
}

// grapeWithin runs the CLI with a deadline: a bad command line must fail at
// once, and an agent that wrongly accepted its flags must not run on.
func (e *env) grapeWithin(d time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(os.Environ(), "GRAPE_DATABASE_URL="+e.dbURL, "GRAPE_AS=e2e-test")
	var o, eb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &eb
	err = cmd.Run()
	return o.String(), eb.String(), err
}

// fill expands {{.Name}} in a corpus string.
func fill(t testing.TB, s string, vars map[string]string) string {
	t.Helper()
	tmpl, err := template.New("case").Option("missingkey=error").Parse(s)
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, tmpl.Execute(&b, vars))
	return b.String()
}

// cut3 splits "status kind rest of the text".
func cut3(s string) (a, b, rest string, ok bool) {
	a, s, ok1 := strings.Cut(s, " ")
	b, rest, ok2 := strings.Cut(s, " ")
	return a, b, rest, ok1 && ok2
}
