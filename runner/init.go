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
//
// With Job.InitCache set and a committed lock file, Init first tries the
// .terraform kept by an earlier run with the same fingerprint (see
// initcache.go) and runs no terraform at all when it can; a full init that
// passed the lock check is kept for the next run.
func (r *Runner) Init(ctx context.Context, j Job) error {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return &Error{Kind: errkind.Init, Phase: "init", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
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

	fp, reused, err := r.reuseInit(s, dir, j, committed != nil)
	if err != nil || reused {
		return err
	}
	if j.MigrateState {
		s.agentf("terraform init -migrate-state -force-copy%s: copying the state to the configured backend", backendKeys(j.BackendConfig))
	} else {
		s.agentf("terraform init%s", backendKeys(j.BackendConfig))
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
	if err := checkLock(s, lockPath, committed); err != nil {
		return err
	}
	r.keepInit(s, dir, j, fp)
	return nil
}

// reuseInit puts the .terraform of an earlier run of the same root module
// in place when Job.InitCache holds one with this run's fingerprint, and
// says so in the log; otherwise it says why init runs. fp is "" when this
// run's init result may not be kept either.
func (r *Runner) reuseInit(s *sink, dir string, j Job, locked bool) (fp string, reused bool, err error) {
	if j.InitCache == "" {
		return "", false, nil
	}
	if j.MigrateState {
		// The migration is init's work itself; what it leaves is kept
		// by the next run's own init.
		s.agentf("init: nothing reused (this run moves the state to another backend)")
		return "", false, nil
	}
	if !locked {
		s.agentf("init: nothing reused (no committed %s: terraform chooses the providers on every run)", LockFile)
		return "", false, nil
	}
	fp, why, err := r.initFingerprint(dir, j)
	if err != nil {
		return "", false, &Error{Kind: errkind.Init, Phase: "init", Msg: fmt.Sprintf("fingerprinting the root module for the init cache: %v", err), Err: err}
	}
	if why != "" {
		s.agentf("init: nothing reused (%s)", why)
		return "", false, nil
	}
	if why := restoreInit(j.InitCache, fp, dir); why != "" {
		s.agentf("init: nothing reused for %s (%s)", shortFP(fp), why)
		return fp, false, nil
	}
	s.agentf("init: reused from %s (the .terraform of an earlier run with the same lock file, .tf files, backend config, CLI config and %s %s); terraform init not run, plan still checks the providers against the lock file",
		shortFP(fp), r.engine.Name, r.engine.Version)
	return fp, true, nil
}

// keepInit stores a successful init's .terraform for the next run; failing
// to is logged, never fatal.
func (r *Runner) keepInit(s *sink, dir string, j Job, fp string) {
	if j.InitCache == "" || fp == "" {
		return
	}
	why, err := saveInit(j.InitCache, fp, dir)
	switch {
	case err != nil:
		r.log.Warn("keeping .terraform for the next run failed", "dir", dir, "err", err)
		s.agentf("init: not kept for the next run (%v)", err)
	case why != "":
		s.agentf("init: not kept for the next run (%s)", why)
	default:
		s.agentf("init: kept as %s for the next run", shortFP(fp))
	}
}

// ForgetInit drops the init cache of a job, so its next run runs a full
// init: after a plan failed on a reused .terraform, or when the root
// module's config is gone.
func ForgetInit(cache string) error {
	if cache == "" {
		return nil
	}
	if err := os.RemoveAll(cache); err != nil {
		return fmt.Errorf("removing the init cache %s: %w", cache, err)
	}
	return nil
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
