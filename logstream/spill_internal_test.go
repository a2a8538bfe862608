package logstream

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func spillEntry(i int) entry {
	return entry{seq: int64(i), at: int64(1000 + i), stream: uint8(i % 3), line: fmt.Sprintf("line %d %s", i, strings.Repeat("x", i%7))}
}

// Records come back in order across reads of any size, with big records, and
// the file starts over once everything was taken.
func TestSpillRoundTrip(t *testing.T) {
	sp, err := openSpill(t.TempDir(), uuid.New())
	require.NoError(t, err)
	defer func() { require.NoError(t, sp.remove()) }()
	next := 1
	var got []entry
	for round := range 5 {
		for range 100 + round {
			e := spillEntry(next)
			if next%50 == 0 {
				e.line = strings.Repeat("big", 2*spillReadChunk/3) // bigger than a read chunk
			}
			sp.append(e)
			next++
		}
		require.NoError(t, sp.flush())
		for sp.unread > 0 {
			got, err = sp.read(got, 7+round)
			require.NoError(t, err)
		}
		require.Zero(t, sp.size, "drained file is truncated")
	}
	require.Len(t, got, next-1)
	for i, e := range got {
		want := spillEntry(i + 1)
		if (i+1)%50 == 0 {
			want.line = strings.Repeat("big", 2*spillReadChunk/3)
		}
		require.Equal(t, want, e)
	}
}

// A failed flush keeps the records in memory, after the file's, and they
// are still read in order and listed by each.
func TestSpillFlushFailureLosesNothing(t *testing.T) {
	sp, err := openSpill(t.TempDir(), uuid.New())
	require.NoError(t, err)
	defer func() { require.NoError(t, sp.remove()) }()
	for i := 1; i <= 3; i++ {
		sp.append(spillEntry(i))
	}
	require.NoError(t, sp.flush())
	// From now on the file refuses writes, as a full disk would.
	ro, err := os.Open(sp.path)
	require.NoError(t, err)
	rw := sp.f
	sp.f = ro
	// remove (deferred above, so run after this) closes the writable file.
	defer func() { _ = ro.Close(); sp.f = rw }()
	for i := 4; i <= 5; i++ {
		sp.append(spillEntry(i))
	}
	require.Error(t, sp.flush())
	require.Equal(t, 5, sp.unread)

	var listed []int64
	require.NoError(t, sp.each(func(e entry) { listed = append(listed, e.seq) }))
	require.Equal(t, []int64{1, 2, 3, 4, 5}, listed)

	got, err := sp.read(nil, 2)
	require.NoError(t, err)
	got, err = sp.read(got, 2)
	require.NoError(t, err)
	require.NoError(t, sp.flush(), "records the flusher started on stay pending")
	sp.f = rw // truncation needs a writable file
	got, err = sp.read(got, 10)
	require.NoError(t, err)
	require.Equal(t, []entry{spillEntry(1), spillEntry(2), spillEntry(3), spillEntry(4), spillEntry(5)}, got)
	require.Zero(t, sp.unread)
}
