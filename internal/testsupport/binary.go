package testsupport

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// GrapeBinary builds cmd/grape once per test process and returns its path,
// so tests can run real agent processes (and kill them). It is built with
// the race detector when the tests are.
func GrapeBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "grape-bin-")
		if err != nil {
			binErr = err
			return
		}
		sharedMu.Lock()
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		sharedMu.Unlock()
		binPath = filepath.Join(dir, "grape")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/grapehq/grape/cmd/grape")
		cmd := exec.Command("go", args...)
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("building grape (needs the go toolchain): %v\n%s", binErr, binOut)
	}
	return binPath
}
