// Package drift decides when each idle config gets a drift check, queues the
// checks, and acts on their reports (webhooks, auto-remediation). A check is
// a deployment with action "drift", so it takes the config's slot in the
// queue like any run: it never overlaps a deployment of the same config.
package drift

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Off is the schedule value that opts a config out of drift checks.
const Off = "off"

// DefaultSchedule is the agent's default: every six hours.
const DefaultSchedule = "@every 6h"

// Schedule is a parsed drift schedule.
type Schedule struct {
	spec  string
	sched cron.Schedule // nil when off
}

// parser accepts standard 5-field cron expressions and descriptors such as
// @hourly, @daily and @every 6h.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a drift schedule, naming what is wrong with a bad one.
func ParseSchedule(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == Off {
		return Schedule{spec: Off}, nil
	}
	if spec == "" {
		return Schedule{}, errors.New("empty drift schedule: use a 5-field cron expression (\"0 */6 * * *\"), @every 6h, @daily, or off")
	}
	s, err := parser.Parse(spec)
	if err != nil {
		return Schedule{}, fmt.Errorf("drift schedule %q: %w: use a 5-field cron expression (\"0 */6 * * *\"), @every 6h, @daily, or off", spec, err)
	}
	if cs, ok := s.(cron.ConstantDelaySchedule); ok && cs.Delay < time.Minute {
		return Schedule{}, fmt.Errorf("drift schedule %q: checks more often than once a minute would plan constantly; use at least @every 1m", spec)
	}
	return Schedule{spec: spec, sched: s}, nil
}

// Off reports whether the schedule opts out of checks.
func (s Schedule) Off() bool { return s.sched == nil }

func (s Schedule) String() string { return s.spec }

// Next is the first check time after t.
func (s Schedule) Next(t time.Time) time.Time { return s.sched.Next(t) }

// Period is the time between two consecutive checks after t (for cron
// expressions it can vary; this is the one starting after t).
func (s Schedule) Period(t time.Time) time.Duration {
	n := s.sched.Next(t)
	return s.sched.Next(n).Sub(n)
}

// Jitter spreads configs over a tenth of the period (at most 15 minutes),
// the same for a config every time, so a fleet does not plan everything in
// the same second and a config's checks stay evenly spaced.
func Jitter(configID string, period time.Duration) time.Duration {
	window := min(period/10, 15*time.Minute)
	if window <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(configID))
	return time.Duration(h.Sum64() % uint64(window))
}
