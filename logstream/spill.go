package logstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/uuid"
)

// spill is the overflow queue: lines newer than every line in memory, in an
// append-only file read back from the front by the flusher. When the flusher
// has taken everything the file is truncated and writers return to memory.
//
// Appends collect in pending and reach the file with one write per Write
// call (flush), not one per line. If that write fails (disk full), the
// records stay in pending, after the file's records, and are read from
// there: a broken spill loses nothing and keeps the order. The stream then
// stops spilling (see Stream.spillBroken).
//
// Record: seq (8 bytes), produced (8), stream (1), length (4), line.
type spill struct {
	path    string
	f       *os.File
	size    int64  // bytes in the file
	readOff int64  // file bytes already handed to the flusher
	pending []byte // records not in the file yet
	pendOff int    // pending bytes already handed to the flusher
	unread  int    // records not handed to the flusher (file and pending)
	rbuf    []byte
}

const (
	recHeader = 8 + 8 + 1 + 4
	// spillFlushBytes makes one huge Write call flush as it goes.
	spillFlushBytes = 1 << 20
	spillReadChunk  = 1 << 20
)

func spillPath(dir string, id uuid.UUID) string {
	return filepath.Join(dir, "logstream-"+id.String()+".spill")
}

func openSpill(dir string, id uuid.UUID) (*spill, error) {
	path := spillPath(dir, id)
	// A stale file of an earlier attempt holds nothing this run can use.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating spill file: %w", err)
	}
	return &spill{path: path, f: f}, nil
}

// append queues one record; flush writes it.
func (sp *spill) append(e entry) {
	sp.pending = binary.LittleEndian.AppendUint64(sp.pending, uint64(e.seq))
	sp.pending = binary.LittleEndian.AppendUint64(sp.pending, uint64(e.at))
	sp.pending = append(sp.pending, e.stream)
	sp.pending = binary.LittleEndian.AppendUint32(sp.pending, uint32(len(e.line)))
	sp.pending = append(sp.pending, e.line...)
	sp.unread++
}

// flush writes the pending records to the file. Only records the flusher
// has not started on move: once it reads from pending, the rest stays there.
func (sp *spill) flush() error {
	if len(sp.pending) == 0 || sp.pendOff > 0 {
		return nil
	}
	if _, err := sp.f.WriteAt(sp.pending, sp.size); err != nil {
		// Cut off what part was written; the records stay pending.
		_ = sp.f.Truncate(sp.size)
		return fmt.Errorf("appending to spill file %s: %w", sp.path, err)
	}
	sp.size += int64(len(sp.pending))
	if cap(sp.pending) > 4*spillFlushBytes {
		sp.pending = nil
	} else {
		sp.pending = sp.pending[:0]
	}
	return nil
}

// read appends up to n records from the front of the queue to batch: the
// file first, in large chunks (a backlog drains at COPY speed), then pending.
func (sp *spill) read(batch []entry, n int) ([]entry, error) {
	for n > 0 && sp.readOff < sp.size {
		want := min(sp.size-sp.readOff, int64(max(spillReadChunk, cap(sp.rbuf))))
		if int64(cap(sp.rbuf)) < want {
			sp.rbuf = make([]byte, want)
		}
		buf := sp.rbuf[:want]
		if _, err := sp.f.ReadAt(buf, sp.readOff); err != nil {
			return batch, fmt.Errorf("reading spill file %s: %w", sp.path, err)
		}
		before := len(batch)
		var used int
		batch, used, n = decodeRecords(batch, buf, n)
		if used == 0 {
			if len(buf) >= recHeader {
				// One record bigger than the chunk: read it whole next round.
				sp.rbuf = make([]byte, recHeader+int(binary.LittleEndian.Uint32(buf[17:])))
				continue
			}
			return batch, fmt.Errorf("reading spill file %s: truncated record at %d", sp.path, sp.readOff)
		}
		sp.readOff += int64(used)
		sp.unread -= len(batch) - before
	}
	if n > 0 && sp.pendOff < len(sp.pending) {
		before := len(batch)
		var used int
		batch, used, _ = decodeRecords(batch, sp.pending[sp.pendOff:], n)
		sp.pendOff += used
		sp.unread -= len(batch) - before
	}
	if sp.unread == 0 {
		// Everything is with the flusher: start over.
		if err := sp.f.Truncate(0); err != nil {
			return batch, fmt.Errorf("truncating spill file %s: %w", sp.path, err)
		}
		sp.size, sp.readOff = 0, 0
		sp.pending, sp.pendOff = sp.pending[:0], 0
	}
	return batch, nil
}

// decodeRecords appends up to n whole records from buf to batch; it returns
// the bytes used and how many records are still wanted.
func decodeRecords(batch []entry, buf []byte, n int) ([]entry, int, int) {
	used := 0
	for n > 0 && len(buf)-used >= recHeader {
		r := buf[used:]
		length := int(binary.LittleEndian.Uint32(r[17:]))
		if len(r) < recHeader+length {
			break
		}
		batch = append(batch, entry{
			seq:    int64(binary.LittleEndian.Uint64(r[0:])),
			at:     int64(binary.LittleEndian.Uint64(r[8:])),
			stream: r[16],
			line:   string(r[recHeader : recHeader+length]),
		})
		used += recHeader + length
		n--
	}
	return batch, used, n
}

// each calls fn for every record not handed to the flusher, in order,
// without consuming them (for the unsent file when Close gives up).
func (sp *spill) each(fn func(entry)) error {
	for off := sp.readOff; off < sp.size; {
		var h [recHeader]byte
		if _, err := sp.f.ReadAt(h[:], off); err != nil {
			return fmt.Errorf("reading spill file %s: %w", sp.path, err)
		}
		rec := make([]byte, recHeader+int(binary.LittleEndian.Uint32(h[17:])))
		if _, err := sp.f.ReadAt(rec, off); err != nil {
			return fmt.Errorf("reading spill file %s: %w", sp.path, err)
		}
		got, _, _ := decodeRecords(nil, rec, 1)
		fn(got[0])
		off += int64(len(rec))
	}
	got, _, _ := decodeRecords(nil, sp.pending[sp.pendOff:], sp.unread)
	for _, e := range got {
		fn(e)
	}
	return nil
}

func (sp *spill) remove() error {
	errClose := sp.f.Close()
	if err := os.Remove(sp.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing spill file: %w", err)
	}
	return errClose
}
