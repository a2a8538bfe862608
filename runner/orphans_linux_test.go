//go:build linux

package runner

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestKillOrphans builds what a killed agent leaves: a process group whose
// leader (terraform) died while a member (a provider) runs on in the run
// directory. KillOrphans kills the member and nothing else: not a process
// leading its own living group in the same directory (an operator's shell),
// not one outside the directory.
func TestKillOrphans(t *testing.T) {
	root := t.TempDir()
	runDir := filepath.Join(root, "runs", "d1", "tree")
	outside := t.TempDir()
	require.NoError(t, os.MkdirAll(runDir, 0o755))

	// "terraform": leads its group, starts a "provider" in it, then dies.
	leader := exec.Command("sh", "-c", "sleep 60 & echo $!; exec sleep 60")
	leader.Dir = runDir
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := leader.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, leader.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	provider, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(provider, syscall.SIGKILL) })
	// The shell prints the child's pid before the child has exec'd sleep.
	require.Eventually(t, func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", provider))
		return err == nil && strings.TrimSpace(string(comm)) == "sleep"
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, leader.Process.Kill())
	_ = leader.Wait()

	// An operator's process in the run dir, and a process elsewhere.
	shell := exec.Command("sleep", "60")
	shell.Dir = runDir
	shell.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, shell.Start())
	t.Cleanup(func() { _ = shell.Process.Kill(); _ = shell.Wait() })
	other := exec.Command("sleep", "60")
	other.Dir = outside
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })

	killed := KillOrphans(filepath.Join(root, "runs"))
	require.Len(t, killed, 1, "killed %+v", killed)
	require.Equal(t, provider, killed[0].PID)
	require.Equal(t, "sleep", killed[0].Name)
	require.Equal(t, runDir, killed[0].Dir)
	require.Eventually(t, func() bool {
		st, err := readStat(provider)
		return err != nil || st.state == 'Z'
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, syscall.Kill(shell.Process.Pid, 0), "the operator's process lives")
	require.NoError(t, syscall.Kill(other.Process.Pid, 0), "the process elsewhere lives")
	require.Empty(t, KillOrphans(filepath.Join(root, "runs")))
}
