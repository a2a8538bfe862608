//go:build unix

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockCache takes an exclusive flock on the shared plugin cache for the
// duration of one terraform init. terraform documents the cache as not safe
// for concurrent installs; the lock covers concurrent jobs in this agent and
// other agents sharing the data directory. It waits as long as ctx allows.
func (r *Runner) lockCache(ctx context.Context, s *sink) (unlock func(), err error) {
	path := filepath.Join(r.cfg.DataDir, "plugin-cache.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening plugin cache lock: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking plugin cache: %w", err)
		}
		if !waiting {
			waiting = true
			s.agentf("waiting for another terraform init to finish with the shared plugin cache")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
