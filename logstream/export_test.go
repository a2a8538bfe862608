package logstream

import (
	"time"

	"github.com/google/uuid"
)

// SetDurableHook lets tests and benchmarks see every committed batch: when
// each of its lines was produced (Unix ns) and when the commit returned.
func (s *Stream) SetDurableHook(fn func(produced []int64, committed time.Time)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onDurableHook = func(batch []entry, committed time.Time) {
		at := make([]int64, len(batch))
		for i, e := range batch {
			at[i] = e.at
		}
		fn(at, committed)
	}
}

// FlusherDone is closed when the stream's flusher goroutine has exited.
func (s *Stream) FlusherDone() <-chan struct{} { return s.done }

// SpillPath is where a stream of deployment id spills in dir.
func SpillPath(dir string, id uuid.UUID) string { return spillPath(dir, id) }
