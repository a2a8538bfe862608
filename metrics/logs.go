package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grapehq/grape/logstream"
)

// LogStream is what the metrics read of an open deployment log stream
// (*logstream.Stream).
type LogStream interface {
	Stats() logstream.Stats
}

// TrackLogStream adds s to the log metrics until done is called, which the
// agent does right after s.Close: its final counts then move into the totals
// of closed streams. Counters are read from Stats at scrape time, so a long
// apply's lines show up while it runs, not only when it ends.
func (m *Metrics) TrackLogStream(s LogStream) (done func()) {
	return m.logs.track(s)
}

// logCollector computes the log metrics at scrape time: totals of closed
// streams plus the current counts of open ones. Both are monotonic, and a
// stream moves from open to closed under one lock, so the counters never go
// backwards.
type logCollector struct {
	lines, batches, retries, spilled, buffered *prometheus.Desc

	mu     sync.Mutex
	open   map[*tracked]struct{}
	closed logstream.Stats // summed counters of closed streams
}

type tracked struct{ s LogStream }

func newLogCollector() *logCollector {
	return &logCollector{
		lines:    prometheus.NewDesc("grape_log_lines_total", "Deployment log lines committed to deployment_logs.", nil, nil),
		batches:  prometheus.NewDesc("grape_log_batches_total", "Batches of log lines committed to deployment_logs.", nil, nil),
		retries:  prometheus.NewDesc("grape_log_write_retries_total", "Log batch writes that failed and were retried (the database was away or slow).", nil, nil),
		spilled:  prometheus.NewDesc("grape_log_spilled_lines_total", "Log lines that went through a spill file on disk because the memory buffer was full.", nil, nil),
		buffered: prometheus.NewDesc("grape_log_buffer_lines", "Log lines produced but not yet committed, in memory or spilled, over all open streams.", nil, nil),
		open:     map[*tracked]struct{}{},
	}
}

func (c *logCollector) track(s LogStream) func() {
	t := &tracked{s: s}
	c.mu.Lock()
	c.open[t] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			st := s.Stats()
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.open, t)
			addStats(&c.closed, st)
		})
	}
}

func addStats(sum *logstream.Stats, st logstream.Stats) {
	sum.Durable += st.Durable
	sum.Batches += st.Batches
	sum.Retries += st.Retries
	sum.Spilled += st.Spilled
}

// Describe implements prometheus.Collector.
func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lines
	ch <- c.batches
	ch <- c.retries
	ch <- c.spilled
	ch <- c.buffered
}

// Collect implements prometheus.Collector.
func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sum := c.closed
	buffered := 0
	for t := range c.open {
		st := t.s.Stats()
		addStats(&sum, st)
		buffered += st.Buffered
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.lines, prometheus.CounterValue, float64(sum.Durable))
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(sum.Batches))
	ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(sum.Retries))
	ch <- prometheus.MustNewConstMetric(c.spilled, prometheus.CounterValue, float64(sum.Spilled))
	ch <- prometheus.MustNewConstMetric(c.buffered, prometheus.GaugeValue, float64(buffered))
}
