package logstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/grapehq/grape/redact"
	"github.com/grapehq/grape/store"
)

// Defaults for Options' zero values.
const (
	DefaultBatchLines    = 500
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMaxLineBytes  = 64 << 10
	DefaultMemoryLines   = 20_000
	DefaultMemoryBytes   = 16 << 20
)

// Tuning that callers have no reason to change.
const (
	// maxBlock is how long a writer waits for room in memory while the
	// database is healthy but slower than the producer, before spilling.
	maxBlock = 100 * time.Millisecond
	// attemptTimeout bounds one write attempt, so a server that stopped
	// answering (no RST, no error) is noticed and retried.
	attemptTimeout = 30 * time.Second
	minBackoff     = 50 * time.Millisecond
	maxBackoff     = 5 * time.Second
	// entryOverhead approximates what a queued line costs beyond its text.
	entryOverhead = 64
)

// ErrClosed is returned by a Writer used after Close.
var ErrClosed = errors.New("log stream closed")

// Options tune a Stream; the zero value works (without a spill file).
type Options struct {
	// BatchLines: a batch is written as soon as this many lines wait
	// (default 500).
	BatchLines int
	// FlushInterval: or when the oldest waiting line is this old (default 200 ms).
	FlushInterval time.Duration
	// MaxLineBytes: longer lines are stored as several rows (default 64 KiB).
	MaxLineBytes int
	// MemoryLines and MemoryBytes bound the lines held in memory while the
	// database is down or slow (defaults 20,000 lines, 16 MiB); beyond
	// either, lines go to the spill file.
	MemoryLines int
	MemoryBytes int
	// SpillDir holds the spill file (the run dir). Empty: no spill; writers
	// wait for room instead.
	SpillDir string
	// Redactor hides secrets; nil redacts nothing. Secrets added to it later
	// with With apply from the next line on.
	Redactor *redact.Redactor
	// Logger reports outages and recoveries (default slog.Default()).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.BatchLines <= 0 {
		o.BatchLines = DefaultBatchLines
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	o.MaxLineBytes = max(o.MaxLineBytes, 4) // room for any UTF-8 rune
	if o.MemoryLines <= 0 {
		o.MemoryLines = DefaultMemoryLines
	}
	if o.MemoryBytes <= 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Stats describe a stream's progress, for metrics and tests.
type Stats struct {
	Lines      int64         // rows produced (seqs assigned), after cutting long lines
	Durable    int64         // rows committed to deployment_logs
	Batches    int64         // batches committed
	Retries    int64         // failed write attempts that were retried
	Spilled    int64         // rows that went through the spill file
	Buffered   int           // rows produced but not yet committed
	InMemory   int           // of those, rows held in memory (queue and the batch in flight)
	Blocked    time.Duration // total time writers waited for room
	LastSeq    int64         // highest seq assigned
	DurableSeq int64         // highest seq committed (every lower one is too)
}

// entry is one row waiting to be stored.
type entry struct {
	seq    int64
	at     int64 // produced, Unix nanoseconds
	stream uint8 // index into streamNames
	line   string
}

var streamNames = [...]store.Stream{store.StreamStdout, store.StreamStderr, store.StreamAgent}

func streamIndex(s store.Stream) uint8 {
	for i, n := range streamNames {
		if n == s {
			return uint8(i)
		}
	}
	panic(fmt.Sprintf("logstream: unknown stream %q", s))
}

// Stream is the log pipeline of one deployment run.
type Stream struct {
	st   *store.Store
	id   uuid.UUID
	opts Options
	log  *slog.Logger

	mu            sync.Mutex
	nextSeq       int64   // last seq assigned
	mem           []entry // queue, oldest first, from memHead
	memHead       int
	memBytes      int
	inflight      int // rows in the batch being written
	spill         *spill
	spillBroken   bool // the spill file failed: treat as no SpillDir
	writers       []*lineWriter
	closing       bool
	flusherGone   bool
	healthy       bool          // the last write attempt succeeded
	room          chan struct{} // closed and replaced when room appears or health changes
	stats         Stats
	flusherErr    error
	onDurableHook func(batch []entry, committed time.Time) // tests: latency

	wake   chan struct{} // cap 1: something for the flusher to look at
	done   chan struct{} // closed when the flusher has exited
	cancel context.CancelCauseFunc
}

// Open starts the log stream of deployment id. Its lines continue after the
// deployment's current max(seq). The stream lives until Close, independent of
// ctx, which only bounds Open itself.
func Open(ctx context.Context, pool *pgxpool.Pool, deploymentID uuid.UUID, opts Options) (*Stream, error) {
	opts.setDefaults()
	st := store.New(pool)
	last, err := st.LastSeq(ctx, deploymentID)
	if err != nil {
		return nil, fmt.Errorf("opening log stream: %w", err)
	}
	runCtx, cancel := context.WithCancelCause(context.Background())
	s := &Stream{
		st:      st,
		id:      deploymentID,
		opts:    opts,
		log:     opts.Logger.With("deployment_id", deploymentID),
		nextSeq: last,
		healthy: true,
		room:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		cancel:  cancel,
	}
	s.stats.LastSeq, s.stats.DurableSeq = last, last
	go s.run(runCtx)
	return s, nil
}

// Writer returns a line-splitting writer for one output stream of a child
// process (store.StreamStdout or store.StreamStderr; it panics on anything
// else). Use a new Writer per process stream; each keeps its own partial
// line. Write never waits on the database (see the package doc).
func (s *Stream) Writer(stream store.Stream) io.Writer {
	w := &lineWriter{s: s, stream: streamIndex(stream)}
	s.mu.Lock()
	s.writers = append(s.writers, w)
	s.mu.Unlock()
	return w
}

// Agentf adds one agent line (several if the message has newlines): phase
// changes and decisions. Partial lines of the process writers are ended
// first, so the table shows output and agent lines in the order they
// happened. Like a Write, it can wait up to 100 ms for room (indefinitely
// without a SpillDir while the database is down).
func (s *Stream) Agentf(format string, args ...any) {
	s.endPartialLines(false)
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	w := &lineWriter{s: s, stream: streamIndex(store.StreamAgent)}
	if _, err := w.Write([]byte(msg + "\n")); err != nil {
		s.log.Warn("agent log line dropped", "error", err)
	}
}

// Close stores every remaining line, the partial last lines of the writers
// included, retrying while ctx allows. It returns nil only when every line is
// committed. If ctx ends first, the lines not stored are written to a file in
// SpillDir (named in the error) and the error says how many there were. The
// stream is finished either way; later calls return the same result.
func (s *Stream) Close(ctx context.Context) error {
	giveUp := func() { s.cancel(fmt.Errorf("closing gave up: %w", context.Cause(ctx))) }
	// Storing the partial lines can wait for room (no SpillDir, database
	// down); once the flusher gives up, those waits end with ErrClosed.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		s.endPartialLines(true)
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.poke()
	}()
	select {
	case <-ended:
	case <-ctx.Done():
		giveUp()
		<-ended
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		giveUp()
		<-s.done
	}
	s.cancel(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flusherErr
}

// Stats returns a snapshot of the stream's counters.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.InMemory = len(s.mem) - s.memHead + s.inflight
	st.Buffered = st.InMemory
	if s.spill != nil {
		st.Buffered += s.spill.unread
	}
	return st
}

// endPartialLines stores what each writer holds without a newline yet; with
// closeWriters, later writes fail with ErrClosed.
func (s *Stream) endPartialLines(closeWriters bool) {
	s.mu.Lock()
	ws := append([]*lineWriter(nil), s.writers...)
	s.mu.Unlock()
	for _, w := range ws {
		w.endLine(closeWriters)
	}
}

func (s *Stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// signalRoomLocked wakes writers waiting for room (or for the health to change).
func (s *Stream) signalRoomLocked() {
	close(s.room)
	s.room = make(chan struct{})
}

func (s *Stream) memLen() int { return len(s.mem) - s.memHead }

func (s *Stream) memFullLocked(size int) bool {
	n := s.memLen()
	return n > 0 && (n >= s.opts.MemoryLines || s.memBytes+size > s.opts.MemoryBytes)
}

func (s *Stream) spillingLocked() bool { return s.spill != nil && s.spill.unread > 0 }

// push queues the lines of one Write call, produced at time at. It holds the
// stream's lock only to append; it waits (without the lock) only when memory
// is full and spilling is not (yet) the answer.
func (s *Stream) push(stream uint8, lines []string, at int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasEmpty := s.memLen() == 0 && !s.spillingLocked()
	spilled := false
	var deadline time.Time // when waiting for room gives way to spilling
	var timer *time.Timer
	defer func() {
		s.flushSpillLocked()
		if timer != nil {
			timer.Stop()
		}
	}()
	for _, line := range lines {
		size := len(line) + entryOverhead
		for {
			if s.flusherGone {
				return ErrClosed
			}
			canSpill := s.opts.SpillDir != "" && !s.spillBroken
			// Once lines are in the spill file, newer ones must follow them there.
			if s.spillingLocked() && canSpill {
				if s.spillLocked(stream, line, at) {
					spilled = true
					break
				}
				continue
			}
			if !s.spillingLocked() && !s.memFullLocked(size) {
				s.appendMemLocked(stream, line, at, size)
				break
			}
			// Memory is full, or a broken spill file must drain first.
			waitedEnough := !deadline.IsZero() && !time.Now().Before(deadline)
			if canSpill && (!s.healthy || waitedEnough) {
				if s.spillLocked(stream, line, at) {
					spilled = true
					break
				}
				continue
			}
			if canSpill && timer == nil {
				deadline = time.Now().Add(maxBlock)
				timer = time.NewTimer(maxBlock)
			}
			s.flushSpillLocked()
			s.poke() // the flusher may be waiting for more lines: it has them
			s.waitForRoomLocked(timer)
		}
	}
	if wasEmpty || spilled || s.memLen() >= s.opts.BatchLines {
		s.poke()
	}
	return nil
}

// waitForRoomLocked releases the lock until the flusher frees memory, the
// database's health changes, or timer (if any) fires.
func (s *Stream) waitForRoomLocked(timer *time.Timer) {
	ch := s.room
	start := time.Now()
	s.mu.Unlock()
	if timer == nil {
		<-ch
	} else {
		select {
		case <-ch:
		case <-timer.C:
		}
	}
	s.mu.Lock()
	s.stats.Blocked += time.Since(start)
}

func (s *Stream) appendMemLocked(stream uint8, line string, at int64, size int) {
	s.nextSeq++
	s.mem = append(s.mem, entry{seq: s.nextSeq, at: at, stream: stream, line: line})
	s.memBytes += size
	s.stats.Lines++
	s.stats.LastSeq = s.nextSeq
}

// spillLocked queues one line in the spill file (written by
// flushSpillLocked); false when no spill file can be created.
func (s *Stream) spillLocked(stream uint8, line string, at int64) bool {
	if s.spill == nil {
		sp, err := openSpill(s.opts.SpillDir, s.id)
		if err != nil {
			s.log.Error("cannot spill log lines to disk; writers will wait for the database", "error", err)
			s.spillBroken = true
			return false
		}
		s.spill = sp
	}
	s.nextSeq++
	s.spill.append(entry{seq: s.nextSeq, at: at, stream: stream, line: line})
	s.stats.Lines++
	s.stats.Spilled++
	s.stats.LastSeq = s.nextSeq
	if len(s.spill.pending) >= spillFlushBytes {
		s.flushSpillLocked()
	}
	return true
}

// flushSpillLocked writes the lines spilled by the current push to the file.
// If that fails the lines stay queued in memory (nothing is lost) and the
// stream stops spilling.
func (s *Stream) flushSpillLocked() {
	if s.spill == nil {
		return
	}
	if err := s.spill.flush(); err != nil && !s.spillBroken {
		s.log.Error("cannot spill log lines to disk; writers will wait for the database", "error", err)
		s.spillBroken = true
	}
}
