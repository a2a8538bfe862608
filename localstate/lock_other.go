//go:build !unix

package localstate

import "os"

// lockState cannot see terraform's lock here; the operator must make sure
// no deployment of the config runs (docs/operations.md).
func lockState(path string) (*os.File, func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
