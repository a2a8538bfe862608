package runner

import (
	"context"
	"fmt"
	"regexp"

	"github.com/hashicorp/terraform-exec/tfexec"
)

// lockIDRE bounds what is passed to terraform as a lock ID: the IDs
// terraform's backends generate (UUIDs, numbers), never something that
// could read as a flag.
var lockIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ForceUnlock releases the state lock lockID in the job's initialised
// directory (terraform force-unlock -force). It removes a lock whatever
// holds it: the caller must know its owner is gone.
func (r *Runner) ForceUnlock(ctx context.Context, j Job, lockID string) error {
	if !lockIDRE.MatchString(lockID) {
		return fmt.Errorf("refusing to force-unlock %q: not a terraform lock ID", lockID)
	}
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return fmt.Errorf("terraform force-unlock %s: %w", lockID, err)
	}
	j.Dir = dir
	s.agentf("terraform force-unlock -force %s", lockID)
	stdout := s.rawWriter(s.stdout)
	stderr := s.rawWriter(s.stderr)
	err = r.run(ctx, j, s, "force-unlock", r.t.Init, func(ctx context.Context, tf *tfexec.Terraform) error {
		tf.SetStdout(stdout)
		tf.SetStderr(stderr)
		return tf.ForceUnlock(ctx, lockID)
	})
	stdout.Flush()
	stderr.Flush()
	if err != nil {
		return fmt.Errorf("terraform force-unlock %s: %w", lockID, err)
	}
	return nil
}
