package runner

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestForceUnlockRefusesOddIDs: a lock ID comes from a state backend's lock
// info; anything that is not an ID (a flag, a path) never reaches terraform.
func TestForceUnlockRefusesOddIDs(t *testing.T) {
	r := &Runner{}
	for _, id := range []string{"", "-force", "--help", "../x", "a b", "id\n", string(make([]byte, 200))} {
		err := r.ForceUnlock(context.Background(), Job{Dir: t.TempDir()}, id)
		require.ErrorContains(t, err, "not a terraform lock ID", "%q", id)
	}
	for _, id := range []string{"c69c5a98-3f94-e980-b419-9d0b1a626a28", "1700000000"} {
		require.True(t, lockIDRE.MatchString(id), id)
	}
}
