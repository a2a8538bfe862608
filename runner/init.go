package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/terraform-exec/tfexec"

	"github.com/grapehq/grape/internal/errkind"
)

// LockFile is terraform's dependency lock file, committed with each
// rendering.
const LockFile = ".terraform.lock.hcl"

// Init runs terraform init in the job's directory with the runner's CLI
// config (shared plugin cache, optional mirror) and the job's backend config.
//
// A committed lock file is used read-only: terraform-exec has no option for
// `init -lockfile=readonly` (hashicorp/terraform-exec#602) and refuses
// TF_CLI_ARGS_init, so Init compares the file after init and fails, with the
// committed file put back, when terraform changed it (a provider or
// platform it did not cover). Without a committed lock file terraform
// writes one for the run, and Init says so.
func (r *Runner) Init(ctx context.Context, j Job) error {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return &Error{Kind: errkind.Init, Phase: "init", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	if j.MigrateState {
		s.agentf("terraform init -migrate-state -force-copy%s: copying the state to the configured backend", backendKeys(j.BackendConfig))
	} else {
		s.agentf("terraform init%s", backendKeys(j.BackendConfig))
	}
	lockPath := filepath.Join(dir, LockFile)
	committed, err := os.ReadFile(lockPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &Error{Kind: errkind.Init, Phase: "init", Msg: fmt.Sprintf("reading %s: %v", LockFile, err), Err: err}
	}
	if committed != nil && r.engine.Name == EngineOpenTofu {
		// OpenTofu resolves hashicorp/aws to registry.opentofu.org: the
		// same provider package (same h1 checksum) under another host.
		// The run dir's copy names that host, so the lock still holds
		// read-only and an unlocked provider is still refused.
		committed = forOpenTofu(committed)
		if err := os.WriteFile(lockPath, committed, 0o644); err != nil {
			return &Error{Kind: errkind.Init, Phase: "init", Msg: fmt.Sprintf("writing %s for OpenTofu: %v", LockFile, err), Err: err}
		}
	}

	js := s.jsonStream()
	stderr := s.rawWriter(s.stderr)
	raw := s.rawWriter(s.stdout)
	err = r.run(ctx, j, s, "init", r.t.Init, func(ctx context.Context, tf *tfexec.Terraform) error {
		unlock, err := r.lockCache(ctx, s)
		if err != nil {
			return err
		}
		defer unlock()
		tf.SetStderr(stderr)
		opts := make([]tfexec.InitOption, 0, len(j.BackendConfig))
		for _, k := range sortedKeys(j.BackendConfig) {
			opts = append(opts, tfexec.BackendConfig(k+"="+j.BackendConfig[k]))
		}
		if j.MigrateState {
			opts = append(opts, tfexec.ForceCopy(true))
		}
		err = tf.InitJSON(ctx, js, opts...)
		var vm *tfexec.ErrVersionMismatch
		if errors.As(err, &vm) {
			// init -json needs terraform >= 1.9 (as terraform-exec reads the
			// version); older binaries print their usual human output, and a
			// failure is then reported without terraform's message.
			tf.SetStdout(raw)
			err = tf.Init(ctx, opts...)
		}
		return err
	})
	js.Flush()
	raw.Flush()
	stderr.Flush()
	if err := finish("init", err, js); err != nil {
		return err
	}
	return checkLock(s, lockPath, committed)
}

// checkLock fails the run when init changed the committed lock file.
func checkLock(s *sink, lockPath string, committed []byte) error {
	after, err := os.ReadFile(lockPath)
	switch {
	case committed == nil && err == nil:
		s.agentf("no %s in the commit: terraform chose the provider versions for this run itself; lock them in the template set (grape templates lock) so every run uses the same ones", LockFile)
		return nil
	case committed == nil:
		return nil // nothing to lock: a module without providers
	case err == nil && bytes.Equal(after, committed):
		return nil
	}
	// Put the committed file back, so nothing of this run can be mistaken
	// for the locked selection.
	if werr := os.WriteFile(lockPath, committed, 0o644); werr != nil {
		err = errors.Join(err, werr)
	}
	msg := fmt.Sprintf("terraform init changed the committed provider lock file %s: the providers it installed (versions, or checksums for this platform) are not the locked ones; "+
		"regenerate the lock file with `grape templates lock` for this agent's platform and provider source, and deploy the new rendering", LockFile)
	return &Error{Kind: errkind.Init, Phase: "init", Msg: msg, Err: errors.Join(ErrLockFileChanged, err)}
}

// forOpenTofu names OpenTofu's registry host in a lock file written for
// terraform's: provider "registry.terraform.io/x/y" → "registry.opentofu.org/x/y".
func forOpenTofu(lock []byte) []byte {
	return bytes.ReplaceAll(lock, []byte(`provider "registry.terraform.io/`), []byte(`provider "registry.opentofu.org/`))
}

// LockFileInRunDir is a committed lock file as Init leaves it in a run dir
// for this runner's engine (OpenTofu's copy names its registry host), so a
// check that the run dir still matches its commit compares like with like.
func (r *Runner) LockFileInRunDir(committed []byte) []byte {
	if r.engine.Name == EngineOpenTofu {
		return forOpenTofu(committed)
	}
	return committed
}
