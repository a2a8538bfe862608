package backoff

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const ms = time.Millisecond

func TestDelaySchedule(t *testing.T) {
	cases := []struct {
		name   string
		policy Policy
		want   []time.Duration // delays for attempts 1, 2, 3, ...
	}{
		{"defaults: 100ms doubling to 5s", Policy{},
			[]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5 * time.Second, 5 * time.Second}},
		{"log writes: 50ms to 5s", Policy{Initial: 50 * ms, Max: 5 * time.Second},
			[]time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5 * time.Second}},
		{"git remote: 200ms to 2s", Policy{Initial: 200 * ms, Max: 2 * time.Second},
			[]time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second}},
		{"agent start: 1s to 30s", Policy{Initial: time.Second, Max: 30 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second}},
		{"cap below initial: the cap wins", Policy{Initial: time.Second, Max: 300 * ms},
			[]time.Duration{time.Second, time.Second}},
		{"cap not a power of two away", Policy{Initial: 300 * ms, Max: time.Second},
			[]time.Duration{300 * ms, 600 * ms, time.Second, time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.policy)
			for i, want := range tc.want {
				require.Equal(t, want, tc.policy.Delay(i+1), "Delay(%d)", i+1)
				require.Equal(t, want, b.Peek(), "Peek before retry %d", i+1)
				require.Equal(t, want, b.Next(), "Next for retry %d (no jitter)", i+1)
				require.Equal(t, i+1, b.Attempt())
			}
		})
	}
}

func TestDelayOfZeroOrNegativeAttemptIsTheFirst(t *testing.T) {
	require.Equal(t, 100*ms, Policy{}.Delay(0))
	require.Equal(t, 100*ms, Policy{}.Delay(-3))
}

func TestDelayDoesNotOverflow(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Duration(1<<63 - 1)}
	require.Positive(t, p.Delay(200))
}

func TestJitterStaysWithinItsFraction(t *testing.T) {
	cases := []struct {
		name   string
		jitter float64
		random float64
		want   time.Duration // of a 400ms delay (third attempt)
	}{
		{"no jitter", 0, 0.99, 400 * ms},
		{"half jitter, lowest draw", 0.5, 0, 400 * ms},
		{"half jitter, middle draw", 0.5, 0.5, 300 * ms},
		{"half jitter, highest draw", 0.5, 1, 200 * ms},
		{"full jitter, highest draw", 1, 1, 0},
		{"jitter above 1 is full", 7, 0.5, 200 * ms},
		{"negative jitter is none", -1, 0.5, 400 * ms},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := New(Policy{Jitter: tc.jitter})
			b.random = func() float64 { return tc.random }
			b.Next()
			b.Next()
			require.Equal(t, tc.want, b.Next())
		})
	}
}

func TestJitterWithTheRealSource(t *testing.T) {
	b := New(Policy{Initial: time.Second, Max: time.Second, Jitter: 0.5})
	seen := map[time.Duration]bool{}
	for range 200 {
		d := b.Next()
		require.GreaterOrEqual(t, d, 500*ms)
		require.LessOrEqual(t, d, time.Second)
		seen[d] = true
	}
	require.Greater(t, len(seen), 1, "jittered delays vary")
}

func TestResetStartsOver(t *testing.T) {
	b := New(Policy{})
	b.Next()
	b.Next()
	b.Reset()
	require.Zero(t, b.Attempt())
	require.Equal(t, 100*ms, b.Next())
}

func TestSleepEndsWithItsContext(t *testing.T) {
	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	require.ErrorIs(t, Sleep(ctx, time.Hour), cause, "an ended context returns at once")

	ctx, cancel2 := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(Policy{Initial: time.Hour}).Wait(ctx) }()
	cancel2(cause)
	select {
	case err := <-done:
		require.ErrorIs(t, err, cause)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not end with its context")
	}

	require.NoError(t, Sleep(context.Background(), ms))
}
