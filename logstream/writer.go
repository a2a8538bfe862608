package logstream

import (
	"bytes"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// lineWriter turns a byte stream into lines: it splits at "\n", "\r\n" and a
// bare "\r", cleans each line (UTF-8, NUL), redacts it and cuts it into rows
// of at most MaxLineBytes, then hands the rows of one Write to the stream in
// one go.
type lineWriter struct {
	s      *Stream
	stream uint8

	mu      sync.Mutex
	buf     []byte // the current line so far (raw, or already cleaned after a cut)
	afterCR bool   // the last byte seen was a "\r" ending a line: skip a "\n" next
	closed  bool
	out     []string // rows finished by the current Write
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	at := time.Now().UnixNano() // lines that arrive in one read were produced together
	w.split(p)
	if err := w.flushOut(at); err != nil {
		return 0, err
	}
	return len(p), nil
}

// endLine stores the partial line, if any; with closeWriter, later writes fail.
func (w *lineWriter) endLine(closeWriter bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = closeWriter
	if len(w.buf) == 0 {
		return
	}
	w.emit(w.buf)
	w.buf = w.buf[:0]
	if err := w.flushOut(time.Now().UnixNano()); err != nil {
		w.s.log.Warn("partial log line dropped", "error", err)
	}
}

func (w *lineWriter) flushOut(at int64) error {
	if len(w.out) == 0 {
		return nil
	}
	err := w.s.push(w.stream, w.out, at)
	clear(w.out) // the queue holds the strings now, not us
	w.out = w.out[:0]
	return err
}

func (w *lineWriter) split(p []byte) {
	if len(p) == 0 {
		return
	}
	if w.afterCR {
		w.afterCR = false
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	for len(p) > 0 {
		i := indexEOL(p)
		if i < 0 {
			w.buf = append(w.buf, p...)
			w.cutLong()
			return
		}
		if len(w.buf) == 0 {
			w.emit(p[:i])
		} else {
			w.buf = append(w.buf, p[:i]...)
			w.emit(w.buf)
			w.buf = w.buf[:0]
			if cap(w.buf) > 4*w.s.opts.MaxLineBytes {
				w.buf = nil // a huge line passed; do not keep its buffer
			}
		}
		if p[i] == '\r' {
			switch {
			case i+1 == len(p):
				w.afterCR = true
			case p[i+1] == '\n':
				i++
			}
		}
		p = p[i+1:]
	}
}

// indexEOL finds the first "\n" or "\r" (two fast byte scans beat one
// IndexAny on the hot path).
func indexEOL(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	head := p
	if i >= 0 {
		head = p[:i]
	}
	if j := bytes.IndexByte(head, '\r'); j >= 0 {
		return j
	}
	return i
}

// emit finishes one complete line: clean, redact, then cut into rows.
func (w *lineWriter) emit(raw []byte) {
	w.appendRows(w.s.opts.Redactor.Redact(clean(raw)))
}

// appendRows cuts an already redacted line into rows of at most MaxLineBytes.
func (w *lineWriter) appendRows(line string) {
	limit := w.s.opts.MaxLineBytes
	for len(line) > limit {
		c := runeCut(line, limit)
		w.out = append(w.out, line[:c])
		line = line[c:]
	}
	w.out = append(w.out, line)
}

// cutLong bounds the memory of a line that has no newline yet: once the
// buffer holds a full row plus enough lookahead that every secret starting
// inside that row is complete, the row is redacted and stored, cut where no
// secret spans the cut.
func (w *lineWriter) cutLong() {
	limit := w.s.opts.MaxLineBytes
	red := w.s.opts.Redactor
	lookahead := red.MaxLen() + utf8.UTFMax
	for len(w.buf) >= limit+lookahead {
		hold := incompleteRuneTail(w.buf) // completed by a later Write
		text := clean(w.buf[:len(w.buf)-hold])
		k := red.SafeCut(text, runeCut(text, limit))
		if k == 0 {
			k = runeCut(text, limit)
		}
		w.appendRows(red.Redact(text[:k]))
		rest := make([]byte, 0, len(text)-k+hold+limit)
		rest = append(rest, text[k:]...)
		rest = append(rest, w.buf[len(w.buf)-hold:]...)
		w.buf = rest
	}
}

// clean makes raw storable and displayable: invalid UTF-8 bytes become
// U+FFFD, NUL becomes U+2400. Clean input (the common case) costs two scans
// and the one copy into a string.
func clean(raw []byte) string {
	if bytes.IndexByte(raw, 0) < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	var b strings.Builder
	b.Grow(len(raw) + 8)
	for i := 0; i < len(raw); {
		c := raw[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				b.WriteRune('\u2400')
			} else {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(raw[i : i+size])
		}
		i += size
	}
	return b.String()
}

// runeCut returns n, or less so that s is not cut inside a UTF-8 sequence;
// never 0 for a non-empty s.
func runeCut(s string, n int) int {
	if n >= len(s) {
		return len(s)
	}
	c := n
	for c > 0 && !utf8.RuneStart(s[c]) {
		c--
	}
	if c == 0 {
		_, size := utf8.DecodeRuneInString(s)
		return size
	}
	return c
}

// incompleteRuneTail returns the length of a UTF-8 sequence cut off at the
// end of b (0 when b ends on a rune boundary).
func incompleteRuneTail(b []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		c := b[len(b)-i]
		if !utf8.RuneStart(c) {
			continue
		}
		if c >= utf8.RuneSelf && !utf8.FullRune(b[len(b)-i:]) {
			return i
		}
		return 0
	}
	return 0
}
