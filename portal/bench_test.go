package portal

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// BenchmarkLiveTerminalLatency measures how long a stored batch takes to
// reach an open live terminal: COPY → trigger NOTIFY → the portal's one
// LISTEN connection → the SSE stream. Reported as p50/p99 per batch.
func BenchmarkLiveTerminalLatency(b *testing.B) {
	e := setupTB(b)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	s := c.events("/deployments/"+d.ID.String()+"/events", "")
	if ev, ok := s.next(10 * time.Second); !ok || ev.Event != "status" {
		b.Fatalf("want the initial status event, got %+v", ev)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		start := time.Now()
		e.addLines(d.ID, int64(i), store.StreamStdout, fmt.Sprintf("line %d", i))
		for {
			ev, ok := s.next(10 * time.Second)
			require.True(b, ok)
			if ev.Event == "line" {
				require.Equal(b, fmt.Sprint(i), ev.ID)
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkDeploymentPage renders the page of a finished 10,000-line run.
func BenchmarkDeploymentPage(b *testing.B) {
	e := setupTB(b)
	c := e.signedIn()
	d := e.running(e.cfg, store.EnqueueParams{})
	const n = 10_000
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("module.vpc.aws_subnet.private[%d]: Creation complete after 1s [id=subnet-%08x] \x1b[32mok\x1b[0m", i, i)
	}
	for i := 0; i < n; i += 1000 {
		e.addLines(d.ID, int64(i+1), store.StreamStdout, lines[i:i+1000]...)
	}
	require.NoError(b, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
	var size int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		status, body := c.get("/deployments/" + d.ID.String())
		if status != http.StatusOK || strings.Count(body, `class="line `) != n {
			b.Fatalf("status %d, %d lines", status, strings.Count(body, `class="line `))
		}
		size = len(body)
	}
	b.ReportMetric(float64(size)/1e6, "MB/page")
}

func BenchmarkANSISegments(b *testing.B) {
	line := "\x1b[0m\x1b[1mmodule.eks.aws_eks_node_group.this[0]: Still creating... [\x1b[32m10m0s\x1b[0m elapsed]\x1b[0m"
	b.SetBytes(int64(len(line)))
	for i := 0; i < b.N; i++ {
		ANSISegments(line)
	}
}

// BenchmarkActAsUser is what acting as the signed-in user costs a page: the
// config page (nine reads) as a user whose roles the database checks on
// every row, against the same page in the legacy owner mode, in one run.
func BenchmarkActAsUser(b *testing.B) {
	for _, mode := range []struct {
		name    string
		asOwner bool
	}{{"as-user", false}, {"as-owner", true}} {
		b.Run(mode.name, func(b *testing.B) {
			e := setupTB(b, func(o *Options) { o.ActAsOwner = mode.asOwner })
			c := e.signedIn()
			for i := range 20 {
				d := e.running(e.cfg, store.EnqueueParams{})
				e.addLines(d.ID, 1, store.StreamStdout, fmt.Sprintf("run %d", i))
				require.NoError(b, e.st.Finish(e.ctx, d.ID, testAgent, store.Outcome{Status: store.StatusSucceeded}))
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if status, body := c.get("/clusters/eu-1/configs/prod"); status != http.StatusOK || !strings.Contains(body, `value="apply"`) {
					b.Fatalf("status %d, or no Deploy button for the admin", status)
				}
			}
		})
	}
}
