//go:build !unix

package runner

import (
	"context"
	"sync"
)

var cacheMu sync.Mutex

// lockCache serializes inits within this process where flock is missing.
func (r *Runner) lockCache(ctx context.Context, s *sink) (func(), error) {
	cacheMu.Lock()
	return cacheMu.Unlock, nil
}
