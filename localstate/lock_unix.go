//go:build unix

package localstate

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// lockState takes the same lock terraform's local backend takes on the
// state file (an fcntl write lock), without waiting, and returns the file it
// holds the lock through: a running terraform
// makes it fail with ErrLocked.
func lockState(path string) (*os.File, func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
			return nil, nil, fmt.Errorf("state %s: %w: wait for the deployment to end (or stop the agent) and try again", path, ErrLocked)
		}
		return nil, nil, fmt.Errorf("locking state %s: %w", path, err)
	}
	return f, func() {
		lk.Type = syscall.F_UNLCK
		_ = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
		f.Close()
	}, nil
}
