// Package backoff is the one retry schedule every loop in Grape uses:
// exponential growth from a first delay up to a cap, with jitter so that many
// agents retrying against one recovering server do not hammer it in step,
// and a wait that ends early when its context does.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy describes a schedule. The zero value is usable: 100 ms doubling to
// 5 s, no jitter.
type Policy struct {
	// Initial is the first delay (default 100 ms).
	Initial time.Duration
	// Max caps every delay (default 5 s).
	Max time.Duration
	// Jitter is the fraction of each delay that is random: a delay d is drawn
	// uniformly from [d*(1-Jitter), d]. 0 is the exact schedule; loops where
	// many processes retry against one server use 0.5.
	Jitter float64
}

func (p Policy) withDefaults() Policy {
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Second
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	p.Jitter = min(max(p.Jitter, 0), 1)
	return p
}

// Delay is the un-jittered delay before retry number attempt (1 is the
// first retry): Initial doubled attempt-1 times, at most Max.
func (p Policy) Delay(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < attempt && d < p.Max; i++ {
		if d > p.Max/2 {
			return p.Max // doubling would pass the cap (or overflow)
		}
		d *= 2
	}
	return min(d, p.Max)
}

// Backoff is the state of one retry loop. It is not safe for concurrent use.
type Backoff struct {
	policy  Policy
	attempt int
	// random returns a float in [0, 1); tests replace it.
	random func() float64
}

// New starts a schedule.
func New(p Policy) *Backoff {
	return &Backoff{policy: p.withDefaults(), random: rand.Float64}
}

// Next returns the delay before the next retry and advances the schedule.
func (b *Backoff) Next() time.Duration {
	b.attempt++
	d := b.policy.Delay(b.attempt)
	if j := b.policy.Jitter; j > 0 {
		d -= time.Duration(j * b.random() * float64(d))
	}
	return d
}

// Peek returns the un-jittered delay Next would be based on, without
// advancing (to decide whether one more retry fits before a deadline).
func (b *Backoff) Peek() time.Duration { return b.policy.Delay(b.attempt + 1) }

// Attempt is how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts the schedule over: the operation succeeded.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for the next delay, or until ctx ends (then it returns
// context.Cause(ctx)).
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep waits for d, or until ctx ends (then it returns context.Cause(ctx)).
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
