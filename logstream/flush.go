package logstream

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/store"
)

// run is the flusher: it takes batches in seq order and writes each until it
// is committed, then the next. It ends when Close has been called and
// everything is written, or when ctx is cancelled (Close gave up).
func (s *Stream) run(ctx context.Context) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []entry
	for {
		s.mu.Lock()
		var wait time.Duration
		var finished bool
		var err error
		batch, wait, finished, err = s.takeLocked(batch[:0], time.Now())
		if finished {
			// Under the same lock as the emptiness check: a line pushed
			// after this gets ErrClosed instead of being left behind.
			s.flusherGone = true
		}
		s.mu.Unlock()
		if err != nil {
			s.finish(err, batch)
			return
		}
		if finished {
			s.finish(nil, nil)
			return
		}
		if len(batch) == 0 {
			var fire <-chan time.Time
			if wait > 0 {
				timer.Reset(wait)
				fire = timer.C
			}
			select {
			case <-s.wake:
			case <-fire:
			case <-ctx.Done():
				timer.Stop()
				s.finish(context.Cause(ctx), nil)
				return
			}
			timer.Stop()
			continue
		}
		if err := s.write(ctx, batch); err != nil {
			s.finish(err, batch)
			return
		}
		clear(batch) // drop the strings
	}
}

// takeLocked returns the next batch when it is due; otherwise how long to
// wait for it (< 0: until woken), or finished when closing with nothing left.
func (s *Stream) takeLocked(batch []entry, now time.Time) ([]entry, time.Duration, bool, error) {
	memLen := s.memLen()
	spilled := 0
	if s.spill != nil {
		spilled = s.spill.unread
	}
	if memLen == 0 && spilled == 0 {
		return batch, -1, s.closing, nil
	}
	// A partial batch waits for more lines until its oldest line is
	// FlushInterval old, unless there is a backlog (memory full, lines in
	// the spill file) or we are closing.
	if memLen > 0 && memLen < s.opts.BatchLines && spilled == 0 && !s.closing && !s.memFullLocked(0) {
		age := now.Sub(time.Unix(0, s.mem[s.memHead].at))
		if age < s.opts.FlushInterval {
			return batch, s.opts.FlushInterval - age, false, nil
		}
	}
	if memLen > 0 {
		n := min(memLen, s.opts.BatchLines)
		part := s.mem[s.memHead : s.memHead+n]
		batch = append(batch, part...)
		for _, e := range part {
			s.memBytes -= len(e.line) + entryOverhead
		}
		clear(part)
		s.memHead += n
		s.compactLocked()
	} else {
		var err error
		batch, err = s.spill.read(batch, s.opts.BatchLines)
		if err != nil {
			return batch, 0, false, err
		}
	}
	s.inflight = len(batch)
	s.signalRoomLocked()
	return batch, 0, false, nil
}

// compactLocked keeps the queue's backing array from growing without bound.
func (s *Stream) compactLocked() {
	switch {
	case s.memHead == len(s.mem):
		s.mem = s.mem[:0]
		s.memHead = 0
	case s.memHead > 1024 && s.memHead > len(s.mem)/2:
		n := copy(s.mem, s.mem[s.memHead:])
		clear(s.mem[n:])
		s.mem = s.mem[:n]
		s.memHead = 0
	}
}

// write stores one batch, retrying with capped exponential backoff until it
// is committed or ctx ends.
func (s *Stream) write(ctx context.Context, batch []entry) error {
	// Half jitter keeps agents from hammering a recovering server in step.
	retry := backoff.New(backoff.Policy{Initial: minBackoff, Max: maxBackoff, Jitter: 0.5})
	var failingSince, lastReport time.Time
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, batch, attempt)
		if err == nil {
			committed := time.Now()
			s.mu.Lock()
			s.stats.Durable += int64(len(batch))
			s.stats.Batches++
			s.stats.DurableSeq = batch[len(batch)-1].seq
			s.inflight = 0
			if !s.healthy {
				s.healthy = true
				s.signalRoomLocked()
			}
			hook := s.onDurableHook
			s.mu.Unlock()
			if attempt > 1 {
				s.log.Info("log lines are being stored again", "down_for", committed.Sub(failingSince).Round(time.Millisecond), "failed_attempts", attempt-1)
			}
			if hook != nil {
				hook(batch, committed)
			}
			return nil
		}
		if ctx.Err() != nil {
			// Say why the stream stopped (e.g. "closing gave up: context
			// deadline exceeded"), not only what the interrupted write saw.
			return fmt.Errorf("%w (last error: %w)", context.Cause(ctx), err)
		}
		if store.Forbidden(err) {
			// The database refuses this writer for good (the deployment is no
			// longer this agent's, or the role may not write it): retrying
			// cannot help. The stream ends; finish keeps the unsent lines.
			s.log.Error("the database refuses these log lines; the stream stops", "error", err)
			return err
		}
		s.mu.Lock()
		s.stats.Retries++
		if s.healthy {
			// Writers waiting for room should spill now rather than wait.
			s.healthy = false
			s.signalRoomLocked()
		}
		s.mu.Unlock()
		now := time.Now()
		if attempt == 1 {
			failingSince, lastReport = now, now
			s.log.Warn("storing log lines failed; buffering and retrying", "error", err)
		} else if now.Sub(lastReport) >= 30*time.Second {
			lastReport = now
			s.log.Warn("storing log lines still failing", "error", err, "down_for", now.Sub(failingSince).Round(time.Second), "buffered", s.Stats().Buffered)
		}
		if retry.Wait(ctx) != nil {
			return fmt.Errorf("%w (last error: %w)", context.Cause(ctx), err)
		}
	}
}

// writeOnce makes one attempt at storing batch, through store.AppendLogs
// (grape_append_logs, migration 0003): one
// statement that checks once per batch that the caller may write this
// deployment's log — an agent role may only append to its own cluster's
// running deployments, and PostgreSQL refuses COPY into a table with
// row-level security — and inserts with ON CONFLICT DO NOTHING, so a batch
// retried after an unknown outcome never duplicates a line. Measured as fast
// as COPY for 500-line batches (see docs/benchmarks.md).
func (s *Stream) writeOnce(ctx context.Context, batch []entry, attempt int) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	seqs := make([]int64, len(batch))
	streams := make([]store.Stream, len(batch))
	lines := make([]string, len(batch))
	created := make([]time.Time, len(batch))
	for i, e := range batch {
		seqs[i], streams[i], lines[i], created[i] = e.seq, streamNames[e.stream], e.line, time.Unix(0, e.at)
	}
	stored, err := s.st.AppendLogs(ctx, s.id, seqs, streams, lines, created)
	if err != nil {
		return err
	}
	if skipped := int64(len(batch)) - stored; attempt == 1 && skipped > 0 {
		// On a first attempt nothing of ours can be there: another writer
		// (a rescuer's note, or a second agent on the deployment) took these
		// seqs. Theirs are kept.
		s.log.Warn("log lines already stored by another writer were kept; ours were skipped", "skipped", skipped, "first_seq", batch[0].seq)
	}
	return nil
}

// finish ends the flusher. With cause == nil everything was stored and the
// spill file goes; otherwise the lines not stored (the batch in flight, the
// queue, the spill) are saved in order to an "unsent" file in SpillDir and
// the cause becomes Close's error.
func (s *Stream) finish(cause error, inflight []entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flusherGone = true
	s.signalRoomLocked() // writers waiting for room get ErrClosed
	if cause == nil {
		if s.spill != nil {
			if err := s.spill.remove(); err != nil {
				s.log.Warn("removing spill file", "error", err)
			}
		}
		return
	}
	unsent := len(inflight) + s.memLen()
	if s.spill != nil {
		unsent += s.spill.unread
	}
	err := fmt.Errorf("storing log lines of deployment %s: %d lines after seq %d not stored: %w", s.id, unsent, s.stats.DurableSeq, cause)
	if path, saveErr := s.saveUnsentLocked(inflight); saveErr != nil {
		err = fmt.Errorf("%w; saving them locally failed too: %w", err, saveErr)
	} else if path != "" {
		err = fmt.Errorf("%w; they are saved in %s", err, path)
	}
	if s.spill != nil {
		if rmErr := s.spill.remove(); rmErr != nil {
			s.log.Warn("removing spill file", "error", rmErr)
		}
	}
	s.flusherErr = err
	s.log.Error("log lines lost to the database", "error", err)
}

// saveUnsentLocked writes the lines that never reached the database, in seq
// order, as "seq<TAB>stream<TAB>line" text: redacted, for a person to read.
func (s *Stream) saveUnsentLocked(inflight []entry) (string, error) {
	if s.opts.SpillDir == "" {
		return "", nil
	}
	path := filepath.Join(s.opts.SpillDir, "logstream-"+s.id.String()+".unsent.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	put := func(e entry) {
		w.WriteString(strconv.FormatInt(e.seq, 10))
		w.WriteByte('\t')
		w.WriteString(string(streamNames[e.stream]))
		w.WriteByte('\t')
		w.WriteString(e.line)
		w.WriteByte('\n')
	}
	for _, e := range inflight {
		put(e)
	}
	for _, e := range s.mem[s.memHead:] {
		put(e)
	}
	if s.spill != nil {
		if err := s.spill.each(put); err != nil {
			f.Close()
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}
