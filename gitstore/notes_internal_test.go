package gitstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestMergeNote(t *testing.T) {
	for _, tc := range []struct{ name, ours, theirs, want string }{
		{"same", "A\n", "A\n", "A\n"},
		{"theirs appended", "A\n", "A\n\nB\n", "A\n\nB\n"},
		{"ours appended", "A\n\nB\n", "A\n", "A\n\nB\n"},
		{"both appended", "X\n\nA\nline\n", "X\n\nB\nline\n", "X\n\nA\nline\n\nB\nline\n"},
		{"shared first line is not a shared event", "G\nAgent: a\n", "G\nAgent: b\n", "G\nAgent: a\n\nG\nAgent: b\n"},
		{"already merged elsewhere", "X\n\nB\n\nC\n", "X\n\nA\n\nB\n", "X\n\nB\n\nC\n\nA\n"},
		{"person's note", "A\n", "Reviewed-By: carol\n", "A\n\nReviewed-By: carol\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, mergeNote(tc.ours, tc.theirs))
		})
	}
}
