package logstream_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/logstream"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// BenchmarkFollowLatency measures how long a stored batch takes to reach a
// follower (`grape logs --follow`): AppendLogs → trigger NOTIFY → the
// process's notifier → Follow reads and emits the line. One batch of one
// line per iteration; reported as p50/p99.
//
// Run: go test -run '^$' -bench FollowLatency -benchtime 200x ./logstream/
func BenchmarkFollowLatency(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := testsupport.DB(b)
	st := store.New(pool)
	d := queueDeployment(b, ctx, st)
	n, err := notify.New(pool.Config().ConnString(), notify.Options{})
	require.NoError(b, err)
	emitted := make(chan int64, 1)
	done := make(chan error, 1)
	go func() {
		_, err := logstream.Follow(ctx, st, n, d.ID, 0, func(l store.LogLine) error {
			emitted <- l.Seq
			return nil
		})
		done <- err
	}()
	require.Eventually(b, n.Alive, 10*time.Second, time.Millisecond, "the follower's LISTEN connection did not come up")

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		start := time.Now()
		_, err := st.AppendLogs(ctx, d.ID, []int64{int64(i)}, []store.Stream{store.StreamStdout}, []string{"line"}, []time.Time{start})
		require.NoError(b, err)
		select {
		case seq := <-emitted:
			require.EqualValues(b, i, seq)
		case <-time.After(10 * time.Second):
			b.Fatalf("line %d was not followed", i)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	cancel()
	<-done
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
