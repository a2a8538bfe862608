package gitstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ConfigCommit is the newest commit of a config in the audit repository.
type ConfigCommit struct {
	SHA string
	// Version is N of its "Grape-Config: <id>@vN" trailer: the config
	// version that commit rendered.
	Version int
	When    time.Time
}

// LatestConfigCommit returns the newest commit on the branch (as this store
// last saw it) whose Grape-Config trailer names configID, following first
// parents from the tip; found is false when there is none. The agent
// compares its version with the one it is asked to deploy: a database
// restored from an older snapshot knows fewer versions than git.
//
// The walk reads commit headers and messages only, no trees, and stops at
// the first match, so it costs one object read per commit since the config
// was last deployed.
func (s *Store) LatestConfigCommit(ctx context.Context, configID string) (cc ConfigCommit, found bool, err error) {
	prefix := TrailerConfig + ": " + configID + "@v"
	err = s.withObjects(ctx, func() error {
		h, err := s.refHash(s.branch)
		if err != nil {
			return err
		}
		for n := 0; !h.IsZero(); n++ {
			if n%256 == 255 && ctx.Err() != nil {
				return fmt.Errorf("reading the history of %s: %w", configID, context.Cause(ctx))
			}
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			if v, ok := trailerVersion(c.Message, prefix); ok {
				cc, found = ConfigCommit{SHA: h.String(), Version: v, When: c.Committer.When}, true
				return nil
			}
			if len(c.ParentHashes) == 0 {
				return nil
			}
			h = c.ParentHashes[0]
		}
		return nil
	})
	if err != nil {
		return ConfigCommit{}, false, fmt.Errorf("finding the newest commit of config %s: %w", configID, err)
	}
	return cc, found, nil
}

func trailerVersion(msg, prefix string) (int, bool) {
	for _, line := range strings.Split(msg, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			continue
		}
		v, err := strconv.Atoi(rest)
		if err == nil && v > 0 {
			return v, true
		}
	}
	return 0, false
}
