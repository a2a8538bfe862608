//go:build linux

package runner

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Orphan is a process KillOrphans killed.
type Orphan struct {
	PID  int
	Name string // the executable's base name
	Dir  string // its working directory
}

// KillOrphans kills the processes a dead agent's terraform left running in
// the run directories under root, and returns them. When an agent is killed
// (kill -9, OOM), terraform dies with it (terraform-exec sets Pdeathsig),
// but the providers terraform started do not: they are terraform's children,
// not the agent's, and an idle provider notices nothing until it next writes
// to the closed pipe of its dead parent — possibly never. Each holds
// hundreds of MB. The agent calls this at start-up, before it runs anything.
//
// A process counts as left behind when its working directory is inside root
// and the process group it belongs to has lost its leader: terraform-exec
// starts terraform as the leader of its own group, the providers join it,
// and the leader is gone once terraform died. An operator's shell cd'd into
// a run directory leads its own, living group and is never touched.
func KillOrphans(root string) []Orphan {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil
	}
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	self := syscall.Getpgrp()
	var out []Orphan
	for _, pid := range procPIDs() {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil || !within(cwd, root) {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.pgrp == self || st.pgrp == pid {
			continue
		}
		if leader, err := readStat(st.pgrp); err == nil && leader.state != 'Z' {
			continue // the group's leader lives: a running terraform, a shell
		}
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			out = append(out, Orphan{PID: pid, Name: filepath.Base(exe), Dir: cwd})
		}
	}
	return out
}
