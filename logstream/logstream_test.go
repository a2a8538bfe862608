package logstream_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	st   *store.Store
}

func setup(t *testing.T) bundle {
	t.Helper()
	t.Parallel()
	pool := testsupport.DB(t)
	return bundle{ctx: context.Background(), pool: pool, st: store.New(pool)}
}

// deployment queues a real deployment row (Follow reads its status).
func (b bundle) deployment(t *testing.T) store.Deployment {
	t.Helper()
	return queueDeployment(t, b.ctx, b.st)
}

func queueDeployment(t testing.TB, ctx context.Context, st *store.Store) store.Deployment {
	t.Helper()
	if _, err := st.GetCluster(ctx, "logs"); err != nil {
		_, err := st.CreateCluster(ctx, "logs", "")
		require.NoError(t, err)
	}
	cfg, err := st.UpsertConfig(ctx, "logs", "c-"+uuid.NewString()[:8], json.RawMessage(`{"modules":{}}`), store.ConfigSettings{})
	require.NoError(t, err)
	d, err := st.Enqueue(ctx, store.EnqueueParams{ClusterID: "logs", ConfigID: cfg.ID})
	require.NoError(t, err)
	return d
}

// finish writes a final status the way the agent does: a plain UPDATE, after
// the log stream is closed.
func finish(t *testing.T, ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, status store.Status) {
	t.Helper()
	_, err := pool.Exec(ctx, `UPDATE deployments SET status = $2, finished_at = now() WHERE id = $1`, id, status)
	require.NoError(t, err)
}

func rows(t *testing.T, ctx context.Context, pool *pgxpool.Pool, id uuid.UUID) []store.LogLine {
	t.Helper()
	r, err := pool.Query(ctx, `SELECT deployment_id, seq, stream, line, created_at FROM deployment_logs WHERE deployment_id = $1 ORDER BY seq`, id)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(r, pgx.RowToStructByName[store.LogLine])
	require.NoError(t, err)
	return lines
}

func texts(lines []store.LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Line
	}
	return out
}

// requireGapless checks seq runs from first without a hole or a repeat.
func requireGapless(t *testing.T, lines []store.LogLine, first int64) {
	t.Helper()
	for i, l := range lines {
		if l.Seq != first+int64(i) {
			t.Fatalf("row %d has seq %d, want %d (gap or repeat)", i, l.Seq, first+int64(i))
		}
	}
}

// requireChildLines checks that rows hold child lines 1..n, each exactly
// once, tagged with the right stream, and in order within each stream.
func requireChildLines(t *testing.T, lines []store.LogLine, n int) {
	t.Helper()
	require.Len(t, lines, n)
	seen := make([]bool, n+1)
	last := map[store.Stream]int{}
	for _, l := range lines {
		var name string
		var i int
		_, err := fmt.Sscanf(l.Line, "%s %d", &name, &i)
		require.NoError(t, err, "row %d: %q", l.Seq, l.Line)
		require.True(t, i >= 1 && i <= n, "row %d: line number %d", l.Seq, i)
		require.False(t, seen[i], "line %d stored twice", i)
		seen[i] = true
		wantStream := store.StreamStdout
		if name == "err" {
			wantStream = store.StreamStderr
		}
		require.Equal(t, wantStream, l.Stream, "line %d", i)
		require.Equal(t, childLine(name, i), l.Line)
		require.Greater(t, i, last[l.Stream], "%s out of order at line %d", l.Stream, i)
		last[l.Stream] = i
	}
}

func TestChildOutputArrivesInOrder(t *testing.T) {
	b := setup(t)
	id := uuid.New()
	// An earlier attempt of this deployment left two lines: they stay, and
	// this run continues after them.
	_, err := b.pool.Exec(b.ctx, `INSERT INTO deployment_logs (deployment_id, seq, stream, line) VALUES ($1, 1, 'agent', 'attempt 1'), ($1, 2, 'agent', 'requeued')`, id)
	require.NoError(t, err)

	s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{SpillDir: t.TempDir()})
	require.NoError(t, err)
	s.Agentf("phase: %s", store.PhasePlan)
	const n = 30_000
	require.NoError(t, runChild(b.ctx, s, "interleaved", childEnvFor(n, 0)...))
	s.Agentf("child exited")
	require.NoError(t, s.Close(b.ctx))

	got := rows(t, b.ctx, b.pool, id)
	requireGapless(t, got, 1)
	require.Len(t, got, n+4)
	require.Equal(t, []string{"attempt 1", "requeued", "phase: plan"}, texts(got[:3]))
	require.Equal(t, store.StreamAgent, got[2].Stream)
	require.Equal(t, "child exited", got[len(got)-1].Line)
	requireChildLines(t, got[3:len(got)-1], n)

	st := s.Stats()
	require.EqualValues(t, n+2, st.Lines)
	require.EqualValues(t, n+2, st.Durable)
	require.EqualValues(t, n+4, st.DurableSeq, "continues after the 2 earlier lines")
	require.Zero(t, st.Buffered)
	require.Less(t, st.Batches, int64(n/10), "lines must be batched")
	// created_at is when the line was produced, so it never goes back by much.
	for i := 1; i < len(got); i++ {
		require.False(t, got[i].CreatedAt.Before(got[i-1].CreatedAt.Add(-time.Second)), "created_at of seq %d", got[i].Seq)
	}
}

// Writes straight into a Writer, split as given: what is stored for each
// kind of awkward output.
func TestLineHygiene(t *testing.T) {
	b := setup(t)
	tests := []struct {
		name   string
		max    int
		writes []string
		want   []string
	}{
		{"newlines", 0, []string{"a\nb\n"}, []string{"a", "b"}},
		{"crlf is one newline, even across writes", 0, []string{"a\r", "\nb\r\n"}, []string{"a", "b"}},
		{"bare cr ends a line (progress)", 0, []string{"10%\r20%\r30%\n"}, []string{"10%", "20%", "30%"}},
		{"cr then text", 0, []string{"a\r", "b\n"}, []string{"a", "b"}},
		{"empty lines kept", 0, []string{"\n\n"}, []string{"", ""}},
		{"line across writes", 0, []string{"ab", "c", "d\n"}, []string{"abcd"}},
		{"invalid utf-8", 0, []string{"bad \xff\xfe end\n"}, []string{"bad \uFFFD\uFFFD end"}},
		{"rune across writes", 0, []string{"caf\xc3", "\xa9\n"}, []string{"café"}},
		{"truncated rune at line end", 0, []string{"x\xe2\x82\n"}, []string{"x\uFFFD\uFFFD"}},
		{"nul", 0, []string{"a\x00b\n"}, []string{"a\u2400b"}},
		{"ansi kept", 0, []string{"\x1b[31mred\x1b[0m\n"}, []string{"\x1b[31mred\x1b[0m"}},
		{"partial last line stored on close", 0, []string{"done\nno newline"}, []string{"done", "no newline"}},
		{"long line cut on rune boundaries", 8, []string{"ééééé\n"}, []string{"éééé", "é"}},
		{"long line without newline", 8, []string{"0123456789abcdefghij", "klmnopqrstuvwxyz"}, []string{"01234567", "89abcdef", "ghijklmn", "opqrstuv", "wxyz"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := uuid.New()
			s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{MaxLineBytes: tc.max})
			require.NoError(t, err)
			w := s.Writer(store.StreamStdout)
			for _, part := range tc.writes {
				n, err := w.Write([]byte(part))
				require.NoError(t, err)
				require.Equal(t, len(part), n)
			}
			require.NoError(t, s.Close(b.ctx))
			got := rows(t, b.ctx, b.pool, id)
			requireGapless(t, got, 1)
			require.Equal(t, tc.want, texts(got))
			_, err = w.Write([]byte("late\n"))
			require.ErrorIs(t, err, logstream.ErrClosed)
		})
	}
}

// The same, from a real process: invalid UTF-8, NUL, "\r" progress, and a
// 1 MiB line without a newline at the end of the output.
func TestChildHygiene(t *testing.T) {
	b := setup(t)
	id := uuid.New()
	s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{})
	require.NoError(t, err)
	require.NoError(t, runChild(b.ctx, s, "hygiene"))
	require.NoError(t, s.Close(b.ctx))

	want := []string{"invalid \uFFFD\uFFFD utf-8", "nul\u2400byte", "Refreshing 10%", "Refreshing 50%", "Refreshing 100%", "windows", "\x1b[1mbold\x1b[0m kept"}
	for range 16 {
		want = append(want, strings.Repeat("x", logstream.DefaultMaxLineBytes))
	}
	got := rows(t, b.ctx, b.pool, id)
	requireGapless(t, got, 1)
	require.Equal(t, want, texts(got))
}

const canarySecret = "gr4pe-canary-7f3a9c1e5b2d"

// forbiddenForms are the ways the canary may appear in stored text: as is,
// URL-encoded, base64-encoded, and, for base64 inside a longer blob, the
// characters made only of the secret's bits at each alignment (found by
// flipping every secret bit and seeing which characters change).
func forbiddenForms(secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	flipped := []byte(secret)
	for i := range flipped {
		flipped[i] ^= 0xff
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for _, prefix := range []string{"", "k", "ke"} {
			a := enc.EncodeToString([]byte(prefix + secret + "-and-what-follows"))
			z := enc.EncodeToString([]byte(prefix + string(flipped) + "-and-what-follows"))
			first, last := -1, -1
			for i := range a {
				if a[i] != z[i] {
					if first < 0 {
						first = i
					}
					last = i
				}
			}
			forms = append(forms, a[first+1:last]) // all but the mixed end characters
		}
	}
	return forms
}

func requireNoSecret(t *testing.T, text, secret string) {
	t.Helper()
	for _, f := range forbiddenForms(secret) {
		require.NotContains(t, text, f)
	}
}

func TestRedactionNeverReachesTheTable(t *testing.T) {
	b := setup(t)
	id := uuid.New()
	env := []string{canaryEnv + "=" + canarySecret}
	red := redact.FromEnviron(env, []string{canaryEnv})
	s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{Redactor: red, MaxLineBytes: 1024})
	require.NoError(t, err)
	require.NoError(t, runChild(b.ctx, s, "canary", env...))
	s.Agentf("an error that quotes the token %s", canarySecret)
	require.NoError(t, s.Close(b.ctx))

	got := rows(t, b.ctx, b.pool, id)
	all := strings.Join(texts(got), "\n")
	requireNoSecret(t, all, canarySecret)
	lines := texts(got)
	require.Equal(t, "full: ***", lines[0])
	require.Equal(t, "split: *** end", lines[1])
	require.Equal(t, "query: https://example.com/?token=***", lines[2])
	require.Equal(t, "b64: ***", lines[4])
	for i := 7; i <= 10; i++ {
		require.Contains(t, lines[i], redact.Mask, "blob line %q", lines[i])
	}
	require.Equal(t, "an error that quotes the token ***", lines[len(lines)-1])
	require.Equal(t, store.StreamAgent, got[len(got)-1].Stream)
	// The two long lines keep their length apart from the secret.
	require.Equal(t, strings.Repeat("a", 1010)+"***"+strings.Repeat("b", 100), lines[11]+lines[12])
	require.Equal(t, strings.Repeat("c", 1015)+"***"+strings.Repeat("d", 3000), strings.Join(lines[13:len(lines)-1], ""))
	for _, l := range lines {
		require.LessOrEqual(t, len(l), 1024)
	}
}

// Redaction must not depend on how output is split into writes or rows:
// every split of a line around the secret, with and without a newline.
func TestRedactionAcrossWritesAndRows(t *testing.T) {
	b := setup(t)
	red := redact.New(0, canarySecret)
	line := "token=" + canarySecret + " tail"
	for _, max := range []int{8, 10, 16, 0} {
		for cut := 0; cut <= len(line); cut += 3 {
			id := uuid.New()
			s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{Redactor: red, MaxLineBytes: max})
			require.NoError(t, err)
			w := s.Writer(store.StreamStderr)
			_, err = io.WriteString(w, line[:cut])
			require.NoError(t, err)
			_, err = io.WriteString(w, line[cut:]+"\n"+line[:cut])
			require.NoError(t, err)
			_, err = io.WriteString(w, line[cut:]) // no newline: stored on Close
			require.NoError(t, err)
			require.NoError(t, s.Close(b.ctx))
			all := strings.Join(texts(rows(t, b.ctx, b.pool, id)), "")
			require.Equal(t, "token=*** tailtoken=*** tail", all, "max=%d cut=%d", max, cut)
		}
	}
}

// A batch whose rows are already there (its first attempt committed after
// all, or someone else wrote those seqs) must not fail the stream or
// duplicate anything: the rows already stored are kept.
func TestBatchHittingStoredRowsIsNotDuplicated(t *testing.T) {
	b := setup(t)
	id := uuid.New()
	s, err := logstream.Open(b.ctx, b.pool, id, logstream.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `INSERT INTO deployment_logs (deployment_id, seq, stream, line) SELECT $1, g, 'agent', 'already there' FROM generate_series(1, 3) g`, id)
	require.NoError(t, err)
	w := s.Writer(store.StreamStdout)
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	require.NoError(t, s.Close(b.ctx))
	got := rows(t, b.ctx, b.pool, id)
	requireGapless(t, got, 1)
	require.Len(t, got, 10)
	require.Equal(t, "already there", got[2].Line)
	require.Equal(t, "line 4", got[3].Line)
	require.Equal(t, "line 10", got[9].Line)
}

// flakyPool is a pool whose connections can be refused at will: the database
// "goes away" without restarting a server, so the spill and retry paths are
// tested quickly and deterministically.
type flakyPool struct {
	*pgxpool.Pool
	down atomic.Bool
}

func newFlakyPool(t *testing.T, url string) *flakyPool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	fp := &flakyPool{}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if fp.down.Load() {
			return nil, fmt.Errorf("dial %s: test says the database is down", addr)
		}
		return dialer.DialContext(ctx, network, addr)
	}
	fp.Pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(fp.Pool.Close)
	return fp
}

func (fp *flakyPool) setDown(down bool) {
	fp.down.Store(down)
	if down {
		fp.Reset() // drop the open connections too
	}
}

// timedWriter records the longest Write: the child's pipe must never wait
// long on the database.
type timedWriter struct {
	w       io.Writer
	longest atomic.Int64
}

func (tw *timedWriter) Write(p []byte) (int, error) {
	start := time.Now()
	n, err := tw.w.Write(p)
	if d := int64(time.Since(start)); d > tw.longest.Load() {
		tw.longest.Store(d)
	}
	return n, err
}

func TestDatabaseDownSpillsAndCatchesUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fp := newFlakyPool(t, testsupport.DatabaseURL(t))
	dir := t.TempDir()
	id := uuid.New()
	red := redact.New(0, canarySecret)
	s, err := logstream.Open(ctx, fp.Pool, id, logstream.Options{SpillDir: dir, MemoryLines: 500, BatchLines: 100, Redactor: red, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)

	fp.setDown(true)
	tw := &timedWriter{w: s.Writer(store.StreamStdout)}
	const n = 6000
	require.NoError(t, runChildWith(ctx, tw, s.Writer(store.StreamStderr), "interleaved", childEnvFor(n, 0)...))
	fmt.Fprintf(tw, "the token is %s\n", canarySecret)

	st := s.Stats()
	require.Positive(t, st.Retries, "writes must have failed")
	require.Positive(t, st.Spilled, "memory holds 500 lines: the rest must spill")
	require.LessOrEqual(t, st.InMemory, 500+100, "memory bound: MemoryLines plus one batch")
	// A writer may wait up to 100 ms for room before it learns the database
	// is down; never for the database itself.
	// The bound is loose for a loaded machine under -race; a writer that
	// did wait on the database would stall for the whole outage.
	require.Less(t, time.Duration(tw.longest.Load()), time.Second, "a writer waited on the database")
	spilled, err := os.ReadFile(logstream.SpillPath(dir, id))
	require.NoError(t, err)
	require.NotEmpty(t, spilled)
	requireNoSecret(t, string(spilled), canarySecret)

	fp.setDown(false)
	require.NoError(t, s.Close(ctx))
	got := rows(t, ctx, fp.Pool, id)
	requireGapless(t, got, 1)
	requireChildLines(t, got[:len(got)-1], n)
	require.Equal(t, "the token is ***", got[len(got)-1].Line)
	_, err = os.Stat(logstream.SpillPath(dir, id))
	require.ErrorIs(t, err, os.ErrNotExist, "the spill file goes once everything is stored")
}

// Close gives up when its context ends; the lines not stored are saved
// locally and counted in the error, and nothing blocks.
func TestCloseGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fp := newFlakyPool(t, testsupport.DatabaseURL(t))
	dir := t.TempDir()
	id := uuid.New()
	s, err := logstream.Open(ctx, fp.Pool, id, logstream.Options{SpillDir: dir, MemoryLines: 10, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	w := s.Writer(store.StreamStdout)
	fmt.Fprintln(w, "stored before the outage")
	require.Eventually(t, func() bool { return s.Stats().Durable == 1 }, 5*time.Second, 10*time.Millisecond)

	fp.setDown(true)
	for i := range 50 {
		fmt.Fprintf(w, "lost line %d\n", i)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	closeErr := s.Close(closeCtx)
	require.Less(t, time.Since(start), 3*time.Second)
	require.ErrorIs(t, closeErr, context.DeadlineExceeded)
	require.ErrorContains(t, closeErr, "50 lines after seq 1 not stored")
	unsent := filepath.Join(dir, "logstream-"+id.String()+".unsent.log")
	require.ErrorContains(t, closeErr, unsent)
	saved, err := os.ReadFile(unsent)
	require.NoError(t, err)
	savedLines := strings.Split(strings.TrimSuffix(string(saved), "\n"), "\n")
	require.Len(t, savedLines, 50)
	require.Equal(t, "2\tstdout\tlost line 0", savedLines[0])
	require.Equal(t, "51\tstdout\tlost line 49", savedLines[49])
	select {
	case <-s.FlusherDone():
	default:
		t.Fatal("flusher still running after Close returned")
	}
	require.Equal(t, closeErr, s.Close(ctx), "a second Close reports the same")
	_, err = fmt.Fprintln(w, "after close")
	require.ErrorIs(t, err, logstream.ErrClosed)
}

// Without a spill directory a full buffer makes writers wait (the only
// alternative to dropping lines), and they go on when the database is back.
func TestNoSpillDirWritersWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fp := newFlakyPool(t, testsupport.DatabaseURL(t))
	id := uuid.New()
	s, err := logstream.Open(ctx, fp.Pool, id, logstream.Options{MemoryLines: 20, BatchLines: 5,
		// Only full batches: a timed flush of a partial one would change
		// how many lines fit before the writer waits.
		FlushInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	fp.setDown(true)
	w := s.Writer(store.StreamStdout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 100; i++ {
			fmt.Fprintf(w, "line %d\n", i)
		}
	}()
	// 20 lines queued plus one batch of 5 in flight, then the writer waits.
	require.Eventually(t, func() bool { return s.Stats().Lines == 25 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("100 lines fitted in a 20-line buffer")
	default:
	}
	require.EqualValues(t, 25, s.Stats().Lines)
	require.Equal(t, 25, s.Stats().InMemory)
	fp.setDown(false)
	<-done
	require.NoError(t, s.Close(ctx))
	got := rows(t, ctx, fp.Pool, id)
	requireGapless(t, got, 1)
	require.Len(t, got, 100)
	require.Equal(t, "line 100", got[99].Line)
}

// cutAfterCommit is a client connection that, when armed, dies right after
// the server has committed a COPY and before the client hears of it: the
// "unknown outcome" a retry must not turn into duplicates. It follows the
// server's message framing (type byte, int32 length) and drops the
// connection when ReadyForQuery ('Z') follows a "COPY n" CommandComplete
// ('C'); the server sends ReadyForQuery only after the commit.
type cutAfterCommit struct {
	net.Conn
	armed *atomic.Bool

	hdr       []byte
	typ       byte
	remaining int
	body      []byte
	sawCopy   bool
}

func (c *cutAfterCommit) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.scan(p[:n]) && c.armed.CompareAndSwap(true, false) {
		c.Conn.Close()
		return 0, fmt.Errorf("test: connection cut after the COPY committed")
	}
	return n, err
}

// scan reports whether b completes a ReadyForQuery right after a COPY.
func (c *cutAfterCommit) scan(b []byte) bool {
	cut := false
	for len(b) > 0 {
		if c.remaining == 0 && len(c.hdr) < 5 {
			k := min(5-len(c.hdr), len(b))
			c.hdr = append(c.hdr, b[:k]...)
			b = b[k:]
			if len(c.hdr) < 5 {
				break
			}
			c.typ = c.hdr[0]
			c.remaining = int(binary.BigEndian.Uint32(c.hdr[1:])) - 4
			c.body = c.body[:0]
			if c.remaining > 0 {
				continue
			}
		} else {
			k := min(c.remaining, len(b))
			if c.typ == 'C' {
				c.body = append(c.body, b[:k]...)
			}
			c.remaining -= k
			b = b[k:]
			if c.remaining > 0 {
				break
			}
		}
		// A whole message.
		switch c.typ {
		case 'C':
			// The batch's statement (grape_append_logs) completed.
			c.sawCopy = strings.HasPrefix(string(c.body), "SELECT ")
		case 'Z':
			cut = cut || c.sawCopy
			c.sawCopy = false
		}
		c.hdr = c.hdr[:0]
	}
	return cut
}

func TestUnknownCommitOutcomeIsNotDuplicated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(testsupport.DatabaseURL(t))
	require.NoError(t, err)
	var armed atomic.Bool
	dialer := &net.Dialer{}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cutAfterCommit{Conn: conn, armed: &armed}, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	var logs strings.Builder
	id := uuid.New()
	s, err := logstream.Open(ctx, pool, id, logstream.Options{Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))})
	require.NoError(t, err)
	armed.Store(true)
	w := s.Writer(store.StreamStdout)
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, s.Close(closeCtx))
	require.False(t, armed.Load(), "the connection was never cut")
	got := rows(t, ctx, pool, id)
	requireGapless(t, got, 1)
	require.Len(t, got, 10)
	require.Equal(t, "line 10", got[9].Line)
	st := s.Stats()
	require.EqualValues(t, 1, st.Retries)
	require.EqualValues(t, 10, st.Durable)
	require.NotContains(t, logs.String(), "another writer", "a retry of our own batch is not a foreign writer")
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// A Close that gives up while a batch is being written (the database hangs,
// here on a lock that blocks inserts but not reads) says why it stopped:
// the caller's deadline, not only the interrupted write's "context canceled".
func TestCloseGivesUpOnAHungWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testsupport.DatabaseURL(t)
	pool := testsupport.Pool(t, url)
	locker, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = locker.Rollback(ctx) }()
	_, err = locker.Exec(ctx, "LOCK TABLE deployment_logs IN SHARE MODE")
	require.NoError(t, err)

	s, err := logstream.Open(ctx, pool, uuid.New(), logstream.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	_, err = io.WriteString(s.Writer(store.StreamStdout), "one\ntwo\n")
	require.NoError(t, err)
	// Whether the batch is already in flight or Close starts it, it waits on
	// the lock until Close's deadline.
	closeCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = s.Close(closeCtx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "closing gave up")
	require.ErrorContains(t, err, "2 lines after seq 0 not stored")
}

// Close must not hang on a writer or a partial line waiting for room that
// never comes (no SpillDir, database down): it gives up with its context and
// the waiting writer gets ErrClosed.
func TestCloseDoesNotHangOnAFullBuffer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fp := newFlakyPool(t, testsupport.DatabaseURL(t))
	s, err := logstream.Open(ctx, fp.Pool, uuid.New(), logstream.Options{MemoryLines: 5, BatchLines: 5, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	fp.setDown(true)
	w := s.Writer(store.StreamStdout)
	_, err = io.WriteString(w, "a partial line")
	require.NoError(t, err)
	writerErr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(s.Writer(store.StreamStderr), strings.Repeat("line\n", 50))
		writerErr <- err
	}()
	require.Eventually(t, func() bool { return s.Stats().Lines == 10 }, 5*time.Second, 10*time.Millisecond)

	closeCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Close(closeCtx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "10 lines after seq 0 not stored")
	require.Less(t, time.Since(start), 2*time.Second)
	select {
	case err := <-writerErr:
		require.ErrorIs(t, err, logstream.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("the waiting writer was not released")
	}
}
