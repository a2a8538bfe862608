package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/term"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

// terminal is a real pseudo-terminal: grape writes to its tty side (which
// term.IsTerminal accepts) and the test reads what a terminal would get.
type terminal struct {
	tty  *os.File
	read chan string
	seen strings.Builder
}

func newTerminal(t *testing.T) *terminal {
	t.Helper()
	ptmx, tty, err := pty.Open()
	require.NoError(t, err)
	// Raw mode: the line discipline must not rewrite what grape wrote
	// (no \n -> \r\n), so the test sees grape's bytes.
	_, err = term.MakeRaw(int(tty.Fd()))
	require.NoError(t, err)
	tm := &terminal{tty: tty, read: make(chan string, 64)}
	go func() {
		defer close(tm.read)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			if n > 0 {
				tm.read <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { tty.Close(); ptmx.Close() })
	return tm
}

// waitFor reads until the output holds want, and returns all of it.
func (tm *terminal) waitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(time.Minute)
	for !strings.Contains(tm.seen.String(), want) {
		select {
		case s, ok := <-tm.read:
			require.True(t, ok, "terminal closed before %q; got %q", want, tm.seen.String())
			tm.seen.WriteString(s)
		case <-deadline:
			require.FailNow(t, "timed out", "waiting for %q; got %q", want, tm.seen.String())
		}
	}
	return tm.seen.String()
}

func (c *cli) runOn(tm *terminal, args ...string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, args, &cmdIO{stdout: tm.tty, stderr: tm.tty, stdin: strings.NewReader(""), getenv: func(k string) string { return c.env[k] }})
}

// TestLogsOnTerminal writes hostile log lines (as any agent credential of
// the cluster could) and reads `grape logs` on a real pseudo-terminal: only
// SGR colours survive there, nothing at all without a terminal or with
// --no-color.
func TestLogsOnTerminal(t *testing.T) {
	c := newCLI(t)
	c.ok("migrate")
	c.ok("cluster", "create", "tty-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "tty-1", "--name", "prod", "-f", spec)
	id := uuid.MustParse(c.ok("deploy", "--cluster", "tty-1", "--config", "prod"))

	st := store.New(testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"]))
	lines := []string{
		"\x1b[1mPlan:\x1b[0m 1 to add\x1b[2J\x1b[H",
		"before\x1b]0;pwned-title\x07after",
		"bare\x1bc reset",
		"spoof\rdone",
		"last line",
	}
	streams := []store.Stream{store.StreamStdout, store.StreamStdout, store.StreamAgent, store.StreamStdout, store.StreamStdout}
	now := time.Now()
	_, err := st.AppendLogs(context.Background(), id, []int64{1, 2, 3, 4, 5}, streams, lines, []time.Time{now, now, now, now, now})
	require.NoError(t, err)

	tm := newTerminal(t)
	require.Equal(t, 0, c.runOn(tm, "logs", id.String()))
	got := tm.waitFor(t, "last line\n")
	assert.Equal(t, "\x1b[1mPlan:\x1b[0m 1 to add\nbeforeafter\n[grape] bare reset\nspoofdone\nlast line\n", got)

	tm = newTerminal(t)
	require.Equal(t, 0, c.runOn(tm, "logs", id.String(), "--no-color"))
	got = tm.waitFor(t, "last line\n")
	assert.Equal(t, "Plan: 1 to add\nbeforeafter\n[grape] bare reset\nspoofdone\nlast line\n", got)

	out := c.ok("logs", id.String()) // a pipe, not a terminal
	assert.Equal(t, "Plan: 1 to add\nbeforeafter\n[grape] bare reset\nspoofdone\nlast line", out)
}

// TestFollowQueued: `grape logs --follow` on a deployment no agent has
// claimed says it is queued, where, and that no agent is online.
func TestFollowQueued(t *testing.T) {
	c := newCLI(t)
	c.ok("migrate")
	c.ok("cluster", "create", "tty-2")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "tty-2", "--name", "prod", "-f", spec)
	c.ok("deploy", "--cluster", "tty-2", "--config", "prod")
	second := c.ok("deploy", "--cluster", "tty-2", "--config", "prod")

	tm := newTerminal(t)
	code := make(chan int, 1)
	go func() { code <- c.runOn(tm, "logs", second, "--follow") }()
	got := tm.waitFor(t, "online")
	assert.Contains(t, got, "deployment "+second+" is queued: 2nd in config ")
	assert.Contains(t, got, "no agent of cluster tty-2 is online")
	c.ok("cancel", second)
	assert.Equal(t, 1, <-code, "a cancelled deployment ends follow with exit 1")
	assert.Contains(t, tm.waitFor(t, "ended cancelled"), "ended cancelled")
}

// TestStatusDiff prints a stored plan diff. Values from the managed
// infrastructure are quoted with their control characters escaped (and the
// output passes through termsafe too).
func TestStatusDiff(t *testing.T) {
	c := newCLI(t)
	c.ok("migrate")
	c.ok("cluster", "create", "diff-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "diff-1", "--name", "prod", "-f", spec)
	id := c.ok("deploy", "--cluster", "diff-1", "--config", "prod")
	assert.Contains(t, c.ok("status", id, "--diff"), "no plan diff recorded")

	pool := testsupport.Pool(t, c.env["GRAPE_DATABASE_URL"])
	_, err := pool.Exec(context.Background(), `UPDATE deployments SET plan_diff = $2 WHERE id = $1`, id,
		`{"resources":[{"address":"aws_vpc.this","action":"update","attributes":[
		  {"path":"tags.team","action":"change","old":"blue","new":"gr\u001b[2Jeen"},
		  {"path":"cidr_block","action":"add","old":null,"new":"10.0.0.0/16"},
		  {"path":"arn","action":"change","old":"arn:1","new":null,"unknown":true},
		  {"path":"password","action":"change","old":null,"new":null,"sensitive":true}]}]}`)
	require.NoError(t, err)
	out := c.ok("status", id, "--diff")
	assert.Contains(t, out, "aws_vpc.this (update)")
	assert.Contains(t, out, `~ tags.team   "blue" -> "gr\x1b[2Jeen"`, "values are quoted, control characters escaped")
	assert.Contains(t, out, `+ cidr_block  "10.0.0.0/16"`)
	assert.Contains(t, out, `~ arn         "arn:1" -> (known after apply)`)
	assert.Contains(t, out, `~ password    (sensitive value)`)
	assert.NotContains(t, out, "\x1b")
	assert.JSONEq(t, `"update"`, func() string {
		var d struct {
			Resources []struct{ Action string } `json:"resources"`
		}
		require.NoError(t, json.Unmarshal([]byte(c.ok("status", id, "--diff", "--json")), &d))
		require.Len(t, d.Resources, 1)
		return `"` + d.Resources[0].Action + `"`
	}())
	_, errOut, code := c.run("", "status", "--diff")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--diff needs a deployment id")
}
