package logstream_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
)

// The synthetic child process is this test binary started again with
// childEnv set: TestMain sees it and runs runChildMode instead of the tests.
const (
	childEnv      = "GRAPE_LOGSTREAM_CHILD"
	childLinesEnv = "GRAPE_LOGSTREAM_CHILD_LINES"
	childRateEnv  = "GRAPE_LOGSTREAM_CHILD_RATE" // lines per second; 0: as fast as possible
	childBufEnv   = "GRAPE_LOGSTREAM_CHILD_BUFFERED"
	canaryEnv     = "GRAPE_CANARY_TOKEN"
	lineWidth     = 80
)

// childLine is line i of the interleaved and steady modes: 80 bytes with the
// stream and the number in front, so the parent can check every one.
func childLine(stream string, i int) string {
	head := fmt.Sprintf("%s %08d ", stream, i)
	return head + strings.Repeat("x", lineWidth-len(head))
}

// childStream says where line i goes: every third line to stderr.
func childStream(i int) string {
	if i%3 == 0 {
		return "err"
	}
	return "out"
}

func runChildMode(mode string) int {
	n, _ := strconv.Atoi(os.Getenv(childLinesEnv))
	rate, _ := strconv.Atoi(os.Getenv(childRateEnv))
	switch mode {
	case "interleaved":
		// One write per line, as terraform does, unless buffered (the
		// 1,000,000-line benchmark measures the pipeline, not syscalls).
		var stdout, stderr io.Writer = os.Stdout, os.Stderr
		var bo, be *bufio.Writer
		if os.Getenv(childBufEnv) != "" {
			bo, be = bufio.NewWriterSize(os.Stdout, 64<<10), bufio.NewWriterSize(os.Stderr, 64<<10)
			stdout, stderr = bo, be
		}
		pace := newPacer(rate)
		for i := 1; i <= n; i++ {
			w := stdout
			if childStream(i) == "err" {
				w = stderr
			}
			if _, err := io.WriteString(w, childLine(childStream(i), i)+"\n"); err != nil {
				return 1 // the parent stopped reading; it sees the exit code
			}
			pace.wait(i)
		}
		if bo != nil {
			bo.Flush()
			be.Flush()
		}
	case "steady":
		secret := os.Getenv(canaryEnv)
		pace := newPacer(rate)
		for i := 1; i <= n; i++ {
			line := childLine("out", i)
			if i%500 == 0 {
				line = fmt.Sprintf("out %08d canary=%s", i, secret)
			}
			os.Stdout.WriteString(line + "\n")
			pace.wait(i)
		}
	case "hygiene":
		for _, s := range hygieneOutput() {
			os.Stdout.WriteString(s)
		}
	case "canary":
		for _, s := range canaryOutput(os.Getenv(canaryEnv)) {
			os.Stdout.WriteString(s)
			time.Sleep(20 * time.Millisecond) // separate reads on the parent's side
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
		return 2
	}
	return 0
}

// hygieneOutput is what the hygiene child prints, write by write.
func hygieneOutput() []string {
	return []string{
		"invalid \xff\xfe utf-8\n",
		"nul\x00byte\n",
		"Refreshing 10%\rRefreshing 50%\rRefreshing 100%\n",
		"windows\r\n",
		"\x1b[1mbold\x1b[0m kept\n",
		strings.Repeat("x", 512<<10), // 1 MiB line without a newline, in two writes
		strings.Repeat("x", 512<<10),
	}
}

// canaryOutput prints the secret in every form the redactor must catch. Each
// element is one write; the "split" line is cut in the middle of the secret.
func canaryOutput(secret string) []string {
	half := len(secret) / 2
	b64 := func(enc *base64.Encoding, prefix string) string {
		return enc.EncodeToString([]byte(prefix + secret + "-and-what-follows"))
	}
	return []string{
		"full: " + secret + "\n",
		"split: " + secret[:half], secret[half:] + " end\n",
		"query: https://example.com/?token=" + url.QueryEscape(secret) + "\n",
		"path: https://example.com/" + url.PathEscape(secret) + "/x\n",
		"b64: " + base64.StdEncoding.EncodeToString([]byte(secret)) + "\n",
		"b64url: " + base64.URLEncoding.EncodeToString([]byte(secret)) + "\n",
		"b64raw: " + base64.RawStdEncoding.EncodeToString([]byte(secret)) + "\n",
		"blob0: " + b64(base64.StdEncoding, "") + "\n",
		"blob1: " + b64(base64.StdEncoding, "k") + "\n",
		"blob2: " + b64(base64.URLEncoding, "ke") + "\n",
		"blob3: " + b64(base64.RawStdEncoding, "key") + "\n",
		// Across a row boundary (MaxLineBytes 1024 in the test), with a newline...
		strings.Repeat("a", 1010) + secret + strings.Repeat("b", 100) + "\n",
		// ...and without one for long enough that the line is cut while it grows.
		strings.Repeat("c", 1015), secret[:4], secret[4:] + strings.Repeat("d", 3000),
		"\n",
	}
}

type pacer struct {
	rate  int
	start time.Time
}

func newPacer(rate int) pacer { return pacer{rate: rate, start: time.Now()} }

// wait sleeps until line i is due at the configured rate.
func (p pacer) wait(i int) {
	if p.rate <= 0 {
		return
	}
	due := p.start.Add(time.Duration(i) * time.Second / time.Duration(p.rate))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}

// runChild runs the child in mode with its stdout and stderr going into s.
func runChild(ctx context.Context, s *logstream.Stream, mode string, env ...string) error {
	return runChildWith(ctx, s.Writer(store.StreamStdout), s.Writer(store.StreamStderr), mode, env...)
}

func runChildWith(ctx context.Context, stdout, stderr io.Writer, mode string, env ...string) error {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+mode)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child %s: %w", mode, err)
	}
	return nil
}

func childEnvFor(lines, rate int) []string {
	return []string{childLinesEnv + "=" + strconv.Itoa(lines), childRateEnv + "=" + strconv.Itoa(rate)}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChildMode(mode))
	}
	testsupport.Main(m)
}
