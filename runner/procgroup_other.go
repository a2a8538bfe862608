//go:build !linux

package runner

import "os/exec"

// The agent runs on Linux. Elsewhere (a developer's laptop) the runner still
// builds, but it cannot find terraform's process group: cancellation falls
// back to terraform-exec's own SIGINT, then SIGKILL of the terraform process
// alone.

func terraformGroups(string) []int { return nil }

func groupMembers(int) int { return 0 }

func killGroup(int) error { return nil }

func ownProcessGroup(*exec.Cmd) {}
