//go:build linux

package runner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// terraformGroups returns the process groups terraform-exec started for a
// run directory: groups whose leader is a child of this process (alive, or a
// zombie not yet reaped) and which have a member whose working directory is
// dir. terraform-exec starts terraform with Setpgid, so terraform leads its
// own group and its providers and provisioner commands are members of it.
//
// Both conditions matter: the parent check keeps the runner from ever
// touching a process it did not start (an operator's shell cd'd into the run
// directory), and the cwd check tells concurrent runs apart.
func terraformGroups(dir string) []int {
	self := os.Getpid()
	selfPgrp := syscall.Getpgrp()
	seen := map[int]bool{}
	var groups []int
	for _, pid := range procPIDs() {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil || !within(cwd, dir) {
			continue // gone, a zombie, or another directory
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp == selfPgrp || seen[st.pgrp] {
			continue
		}
		leader, err := readStat(st.pgrp)
		if err != nil || leader.ppid != self {
			continue
		}
		seen[st.pgrp] = true
		groups = append(groups, st.pgrp)
	}
	return groups
}

// groupMembers counts the live (non-zombie) processes in a process group.
func groupMembers(pgid int) int {
	n := 0
	for _, pid := range procPIDs() {
		st, err := readStat(pid)
		if err == nil && st.pgrp == pgid && st.state != 'Z' {
			n++
		}
	}
	return n
}

// killGroup SIGKILLs every process in the group. A group that is already
// gone is not an error.
func killGroup(pgid int) error {
	if pgid <= 1 {
		return fmt.Errorf("refusing to kill process group %d", pgid)
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing process group %d: %w", pgid, err)
	}
	return nil
}

func procPIDs() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

type procStat struct {
	state byte
	ppid  int
	pgrp  int
}

// readStat parses /proc/<pid>/stat: "pid (comm) state ppid pgrp ...". comm
// may contain spaces and parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: too few fields", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: bad ppid or pgrp", pid)
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp}, nil
}

func within(path, dir string) bool {
	path = strings.TrimSuffix(path, " (deleted)")
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

// ownProcessGroup starts cmd in a new process group, as terraform-exec does
// for terraform.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
