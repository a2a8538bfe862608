package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/store"
)

// diskFull turns a failure caused by a full disk on the agent's machine into
// the outcome a person can act on. Such a failure surfaces deep inside a git
// write or a checkout, where it would read as a git problem; the fix is on
// the agent's machine, and nothing was applied. The full error is logged.
func diskFull(r *reconciler.Run, err error, doing string) (store.Outcome, bool) {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return store.Outcome{}, false
	}
	r.Logs.Agentf("%s failed: %v", doing, err)
	where := ""
	var pe *fs.PathError
	if errors.As(err, &pe) {
		where = " (writing " + pe.Path + ")"
	}
	return failed(store.KindInternal, fmt.Sprintf("the agent's disk is full%s while %s: free space in the agent's --data-dir and queue the deployment again", where, doing)), true
}
