package runner

import (
	"context"
	"errors"

	"github.com/hashicorp/terraform-exec/tfexec"

	"github.com/grapehq/grape/internal/errkind"
)

// Init runs terraform init in the job's directory with the runner's CLI
// config (shared plugin cache, optional mirror) and the job's backend config.
func (r *Runner) Init(ctx context.Context, j Job) error {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return &Error{Kind: errkind.Init, Phase: "init", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	s.agentf("terraform init%s", backendKeys(j.BackendConfig))

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
	return finish("init", err, js)
}
