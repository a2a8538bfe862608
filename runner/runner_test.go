package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/errkind"
	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/plandiff"
)

// recorder is a job's log sink: every line terraform and the runner print.
type recorder struct {
	mu                    sync.Mutex
	stdout, stderr, agent []string
}

type lineSink struct {
	r   *recorder
	dst *[]string
}

func (w lineSink) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	*w.dst = append(*w.dst, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.stdout, "\n") + "\n" + strings.Join(r.stderr, "\n") + "\n" + strings.Join(r.agent, "\n")
}

func (r *recorder) agentLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.agent...)
}

// waitFor polls the job's stdout for a line containing s.
func (r *recorder) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, l := range r.stdout {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}, timeout, 20*time.Millisecond, "terraform never printed %q", s)
}

// newJob copies testdata/modules/<module> into a fresh run directory.
func newJob(t *testing.T, module string) (Job, *recorder) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	require.NoError(t, os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "modules", module))))
	rec := &recorder{}
	j := Job{
		Dir:    dir,
		Stdout: lineSink{rec, &rec.stdout},
		Stderr: lineSink{rec, &rec.stderr},
		Agent:  func(m string) { _, _ = lineSink{rec, &rec.agent}.Write([]byte(m)) },
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("job log:\n%s", rec.all())
		}
	})
	return j, rec
}

func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	if cfg.TerraformBinary == "" {
		cfg.TerraformBinary = testsupport.TerraformBinary(t)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	r, err := New(cfg)
	// A wrapper script the test just wrote can be "text file busy" for a
	// moment: a parallel test's fork still holds the write descriptor until
	// that child execs. New runs the binary at once (engine detection).
	for i := 0; i < 20 && errors.Is(err, syscall.ETXTBSY); i++ {
		time.Sleep(25 * time.Millisecond)
		r, err = New(cfg)
	}
	require.NoError(t, err)
	return r
}

// survivors lists the processes still running in dir (terraform, its
// providers and provisioner commands all start there). Zombies have no cwd
// and are not listed.
func survivors(t *testing.T, dir string) []string {
	t.Helper()
	real, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil || (cwd != real && !strings.HasPrefix(cwd, real+"/")) {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		found = append(found, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return found
}

func requireNoSurvivors(t *testing.T, dir string) {
	t.Helper()
	// SIGKILL is delivered at once, but the kernel needs a moment to tear
	// the processes down.
	require.Eventually(t, func() bool { return len(survivors(t, dir)) == 0 }, 3*time.Second, 20*time.Millisecond,
		"processes survived the run: %v", survivors(t, dir))
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	require.ErrorAs(t, err, &e)
	return e
}

func TestVersion(t *testing.T) { eachEngine(t, testVersion) }

func testVersion(t *testing.T, eng testsupport.Engine) {
	r := newRunner(t, Config{TerraformBinary: eng.Binary})
	v, err := r.Version(context.Background())
	require.NoError(t, err)
	assert.Equal(t, eng.Name, r.Engine().Name)
	assert.Equal(t, v, r.Engine().Version)
	out, err := exec.Command(r.Binary(), "version").Output()
	require.NoError(t, err)
	banner := map[string]string{"terraform": "Terraform", "opentofu": "OpenTofu"}[eng.Name]
	assert.Contains(t, string(out), banner+" v"+v)
}

// TestLifecycle walks one run directory through everything a deployment
// does: init, plan, apply of the saved plan, outputs, a no-op plan, a change
// (update + replacement + sensitive update) as a drift check, destroy, and a
// stale plan refused.
func TestLifecycle(t *testing.T) { eachEngine(t, testLifecycle) }

func testLifecycle(t *testing.T, eng testsupport.Engine) {
	ctx := context.Background()
	r := newRunner(t, Config{TerraformBinary: eng.Binary})
	j, rec := newJob(t, "basic")

	require.NoError(t, r.Init(ctx, j))
	assert.Contains(t, rec.agentLines(), "terraform init")

	res, err := r.Plan(ctx, j, PlanOptions{})
	require.NoError(t, err)
	assert.True(t, res.Changes)
	assert.Equal(t, filepath.Join(mustReal(t, j.Dir), DefaultPlanFile), res.PlanFile)
	assert.FileExists(t, res.PlanFile)
	assert.Equal(t, PlanSummary{Add: 3, Resources: []ResourceChange{
		{Address: "terraform_data.greeting", Actions: []string{"create"}},
		{Address: "terraform_data.pinned", Actions: []string{"create"}},
		{Address: "terraform_data.secret", Actions: []string{"create"}},
	}}, res.Summary)
	assert.Nil(t, res.Drift, "drift details only for drift checks")

	applied, err := r.ApplyOutputs(ctx, j, res.PlanFile)
	require.NoError(t, err)
	require.NoError(t, applied.OutputsErr)
	assert.Contains(t, rec.all(), "Apply complete! Resources: 3 added, 0 changed, 0 destroyed.")
	assert.Contains(t, rec.agentLines(), "outputs: 2, as terraform apply reported them (no separate terraform output)")
	assert.NotContains(t, rec.agentLines(), "terraform output -json")

	outs, err := r.Outputs(ctx, j)
	require.NoError(t, err)
	// What apply reported is what `terraform output -json` reads.
	require.Len(t, applied.Outputs, len(outs))
	for name, o := range outs {
		got := applied.Outputs[name]
		assert.Equal(t, o.Sensitive, got.Sensitive, name)
		assert.JSONEq(t, string(o.Type), string(got.Type), name)
		assert.JSONEq(t, string(o.Value), string(got.Value), name)
	}
	assert.NotContains(t, string(applied.Outputs["secret"].Value), "s3cr3t")
	assert.JSONEq(t, `"hello"`, string(outs["greeting"].Value))
	assert.False(t, outs["greeting"].Sensitive)
	assert.JSONEq(t, `"(sensitive)"`, string(outs["secret"].Value))
	assert.True(t, outs["secret"].Sensitive)

	res, err = r.Plan(ctx, j, PlanOptions{DetailedExitCode: true})
	require.NoError(t, err)
	assert.False(t, res.Changes)
	assert.Equal(t, PlanSummary{Resources: []ResourceChange{}}, res.Summary)
	assert.Nil(t, res.Drift)
	assert.True(t, res.Diff.Empty())
	assert.Contains(t, rec.all(), "No changes. Your infrastructure matches the configuration.")

	require.NoError(t, os.WriteFile(filepath.Join(j.Dir, "change.auto.tfvars.json"), []byte(`{"greeting":"bonjour","secret":"another-s3cr3t"}`), 0o644))
	res, err = r.Plan(ctx, j, PlanOptions{DetailedExitCode: true})
	require.NoError(t, err)
	assert.True(t, res.Changes)
	assert.Equal(t, 1, res.Summary.Add)
	assert.Equal(t, 2, res.Summary.Change)
	assert.Equal(t, 1, res.Summary.Destroy)
	assert.Equal(t, 1, res.Summary.Replace)
	require.NotNil(t, res.Drift)
	for i := range res.Drift.Resources {
		res.Drift.Resources[i].Changes = nil // the plandiff goldens cover them
	}
	assert.Equal(t, &DriftDetails{Resources: []DriftedResource{
		{Address: "terraform_data.greeting", Action: "update", Attributes: []string{"input"}},
		{Address: "terraform_data.pinned", Action: "replace", Attributes: []string{"triggers_replace"}},
		{Address: "terraform_data.secret", Action: "update", SensitiveChanged: true},
	}}, res.Drift)
	// The log shows the diff, attribute by attribute, before terraform's
	// summary line, and no secret.
	log := rec.all()
	diffAt := strings.Index(log, "  # terraform_data.greeting will be updated in-place")
	require.GreaterOrEqual(t, diffAt, 0, log)
	assert.Contains(t, log[diffAt:], `~ input  = "hello" -> "bonjour"`)
	assert.Contains(t, log[diffAt:], `~ input  = (sensitive value)`)
	assert.Contains(t, log[diffAt:], "# forces replacement")
	assert.Greater(t, strings.Index(log, "Plan: 1 to add, 2 to change, 1 to destroy."), diffAt)
	assert.NotContains(t, log, "Plan to update", "the diff replaces terraform's one line per resource")
	assert.NotContains(t, log, fakeSecret)
	assert.NotContains(t, log, "another-s3cr3t")
	require.NotNil(t, res.Plan)
	assert.Contains(t, string(res.PlanJSON), "another-s3cr3t", "PlanJSON is the plan as terraform wrote it, for the policy check")
	require.NoError(t, r.Apply(ctx, j, res.PlanFile))

	// Two destroy plans of the same state: applying one makes the other stale.
	first, err := r.Plan(ctx, j, PlanOptions{Destroy: true, PlanFile: "destroy-1.tfplan"})
	require.NoError(t, err)
	assert.Equal(t, 3, first.Summary.Destroy)
	second, err := r.Plan(ctx, j, PlanOptions{Destroy: true, PlanFile: "destroy-2.tfplan"})
	require.NoError(t, err)
	require.NoError(t, r.Apply(ctx, j, second.PlanFile))
	assert.Contains(t, rec.all(), "Apply complete! Resources: 0 added, 0 changed, 3 destroyed.")
	e := asError(t, r.Apply(ctx, j, first.PlanFile))
	assert.Equal(t, errkind.Apply, e.Kind)
	assert.Contains(t, e.Msg, "Saved plan is stale")

	e = asError(t, r.Apply(ctx, j, ""))
	assert.Equal(t, errkind.Apply, e.Kind)
	e = asError(t, r.Apply(ctx, j, "never-planned.tfplan"))
	assert.Contains(t, e.Msg, "never-planned.tfplan is missing")

	log = rec.all()
	for _, secret := range []string{"s3cr3t-value-never-logged", "another-s3cr3t"} {
		assert.NotContains(t, log, secret, "a sensitive value reached the log")
	}
}

// TestEnvironmentIsolation checks, from inside a terraform run, what
// environment terraform and its children really get.
func TestEnvironmentIsolation(t *testing.T) {
	t.Setenv("GRAPE_DATABASE_URL", "postgres://grape:topsecret@db/grape")
	t.Setenv("GRAPE_GIT_TOKEN", "ghp_topsecret")
	t.Setenv("DATABASE_URL", "postgres://app:topsecret@db/app")
	t.Setenv("SOME_OTHER_SECRET", "topsecret")
	t.Setenv("TF_VAR_leak", "topsecret")
	agentDataDir := t.TempDir()
	t.Setenv("TF_DATA_DIR", agentDataDir)
	t.Setenv("AWS_REGION", "eu-west-3")
	t.Setenv("MYCORP_CA_FILE", "/etc/mycorp.pem")
	ctx := context.Background()
	r := newRunner(t, Config{EnvAllowlist: []string{"MYCORP_*"}, ExtraEnv: map[string]string{"EXTRA_SETTING": "1"}})
	j, rec := newJob(t, "envdump")
	j.Env = map[string]string{"JOB_SETTING": "2"}

	require.NoError(t, r.Init(ctx, j))
	res, err := r.Plan(ctx, j, PlanOptions{})
	require.NoError(t, err)
	require.NoError(t, r.Apply(ctx, j, res.PlanFile))

	b, err := os.ReadFile(filepath.Join(j.Dir, "env.txt"))
	require.NoError(t, err)
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	assert.NotContains(t, string(b), "topsecret")
	for _, k := range []string{"GRAPE_DATABASE_URL", "GRAPE_GIT_TOKEN", "DATABASE_URL", "SOME_OTHER_SECRET", "TF_VAR_leak", "TF_DATA_DIR"} {
		assert.NotContains(t, env, k)
	}
	assert.Equal(t, "eu-west-3", env["AWS_REGION"])
	assert.Equal(t, "/etc/mycorp.pem", env["MYCORP_CA_FILE"])
	assert.Equal(t, "1", env["EXTRA_SETTING"])
	assert.Equal(t, "2", env["JOB_SETTING"])
	assert.Equal(t, "1", env["TF_IN_AUTOMATION"])
	assert.Equal(t, "1", env["CHECKPOINT_DISABLE"])
	assert.Equal(t, r.CLIConfigFile(), env["TF_CLI_CONFIG_FILE"])
	assert.Equal(t, os.Getenv("HOME"), env["HOME"])
	shared, err := os.ReadDir(agentDataDir)
	require.NoError(t, err)
	assert.Empty(t, shared, "terraform wrote into the agent's TF_DATA_DIR")
	// Nothing outside the allowlist, apart from what terraform-exec and the
	// shell running the provisioner add themselves.
	allowed := append(append([]string(nil), builtinAllow...), "MYCORP_*", "EXTRA_SETTING", "JOB_SETTING", "CHECKPOINT_DISABLE", "PWD", "SHLVL", "OLDPWD", "_")
	for k := range env {
		assert.True(t, matchAny(allowed, k), "unexpected variable %s in terraform's environment", k)
	}
	assert.NotContains(t, rec.all(), "topsecret")
}

// TestCancelDuringApply: terraform honours SIGINT, stops the provisioner and
// exits, leaving the provisioner's child behind in its process group; the
// runner kills that, reports a cancellation, and the state lock is free.
func TestCancelDuringApply(t *testing.T) { eachEngine(t, testCancelDuringApply) }

func testCancelDuringApply(t *testing.T, eng testsupport.Engine) {
	r := newRunner(t, Config{TerraformBinary: eng.Binary}) // default 30 s grace: terraform must stop by itself
	j, rec := newJob(t, "slow")
	require.NoError(t, r.Init(context.Background(), j))
	res, err := r.Plan(context.Background(), j, PlanOptions{})
	require.NoError(t, err)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	errc := make(chan error, 1)
	go func() { errc <- r.Apply(ctx, j, res.PlanFile) }()
	rec.waitFor(t, "(local-exec): Executing:", 20*time.Second)
	require.Eventually(t, func() bool { return strings.Contains(fmt.Sprint(survivors(t, j.Dir)), "sleep 30") }, 15*time.Second, 20*time.Millisecond)

	start := time.Now()
	cancel(errkind.ErrCancelRequested)
	err = <-errc
	elapsed := time.Since(start)

	e := asError(t, err)
	assert.Equal(t, errkind.Cancelled, e.Kind)
	assert.Equal(t, "apply", e.Phase)
	assert.Equal(t, "cancelled in apply: cancel requested", e.Msg)
	require.ErrorIs(t, err, errkind.ErrCancelRequested)
	assert.Less(t, elapsed, 10*time.Second, "terraform should stop on SIGINT, well before the grace period")
	assert.Contains(t, rec.all(), "Interrupt received.")
	// Whether the provisioner's sleep outlives terraform depends on a race
	// (the SIGINT reaches the whole group; sleep may or may not have died
	// of it when terraform exits). What must hold: nothing of the group
	// survives, and any kill the runner needed is reported, with a count.
	requireNoSurvivors(t, j.Dir)
	for _, l := range rec.agentLines() {
		if strings.HasPrefix(l, "terraform stopped; killed") {
			assert.Regexp(t, `^terraform stopped; killed [1-9][0-9]* process\(es\) it left running in its process group$`, l)
		}
	}

	_, err = r.Plan(context.Background(), j, PlanOptions{PlanFile: "after.tfplan"})
	require.NoError(t, err, "the state lock should be released")
}

// TestCancelKillsProcessGroupAfterGrace: a terraform that does not react to
// SIGINT (here a wrapper shell that ignores it and runs the real terraform
// as its child) has its whole process group killed after the grace period.
func TestCancelKillsProcessGroupAfterGrace(t *testing.T) {
	eachEngine(t, testCancelKillsProcessGroupAfterGrace)
}

func testCancelKillsProcessGroupAfterGrace(t *testing.T, eng testsupport.Engine) {
	wrapper := filepath.Join(t.TempDir(), "terraform")
	script := fmt.Sprintf("#!/bin/sh\ntrap '' INT\n%q \"$@\"\n", eng.Binary)
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))
	r := newRunner(t, Config{TerraformBinary: wrapper, Timeouts: Timeouts{Grace: time.Second}})
	j, rec := newJob(t, "slow")
	require.NoError(t, r.Init(context.Background(), j))
	res, err := r.Plan(context.Background(), j, PlanOptions{})
	require.NoError(t, err)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	errc := make(chan error, 1)
	go func() { errc <- r.Apply(ctx, j, res.PlanFile) }()
	rec.waitFor(t, "(local-exec): Executing:", 20*time.Second)
	// wrapper shell, terraform, provisioner shell and sleep
	require.Eventually(t, func() bool {
		ps := survivors(t, j.Dir)
		return len(ps) == 4 && strings.Contains(fmt.Sprint(ps), "sleep 30")
	}, 5*time.Second, 20*time.Millisecond, "want 4 processes in the run dir: %v", survivors(t, j.Dir))

	start := time.Now()
	cancel(errkind.ErrShutdown)
	err = <-errc
	elapsed := time.Since(start)

	e := asError(t, err)
	assert.Equal(t, errkind.Cancelled, e.Kind)
	require.ErrorIs(t, err, errkind.ErrShutdown)
	assert.Equal(t, "cancelled in apply: agent shut down", e.Msg)
	assert.GreaterOrEqual(t, elapsed, time.Second, "killed before the grace period ended")
	// Without the kill the apply would run its 30 s sleep to the end.
	assert.Less(t, elapsed, 15*time.Second)
	assert.NotContains(t, rec.all(), "Interrupt received.", "the wrapper should have kept SIGINT from terraform")
	assert.Regexp(t, `terraform still running 1s after SIGINT: killed its process group \[\d+\]`, strings.Join(rec.agentLines(), "\n"))
	requireNoSurvivors(t, j.Dir)

	_, err = r.Plan(context.Background(), j, PlanOptions{PlanFile: "after.tfplan"})
	require.NoError(t, err, "a killed terraform's local state lock dies with it")
}

func TestPhaseTimeout(t *testing.T) { eachEngine(t, testPhaseTimeout) }

func testPhaseTimeout(t *testing.T, eng testsupport.Engine) {
	r := newRunner(t, Config{TerraformBinary: eng.Binary, Timeouts: Timeouts{Apply: 2 * time.Second}})
	j, _ := newJob(t, "slow")
	require.NoError(t, r.Init(context.Background(), j))
	res, err := r.Plan(context.Background(), j, PlanOptions{})
	require.NoError(t, err)

	start := time.Now()
	err = r.Apply(context.Background(), j, res.PlanFile)
	e := asError(t, err)
	assert.Equal(t, errkind.Timeout, e.Kind)
	assert.Equal(t, "apply", e.Phase)
	assert.Equal(t, "timed out in apply after 2s", e.Msg)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 10*time.Second)
	requireNoSurvivors(t, j.Dir)
}

// TestStateLockHeld: another terraform process holds the lock on the same
// local state; the plan fails at once with the holder named.
func TestStateLockHeld(t *testing.T) { eachEngine(t, testStateLockHeld) }

func testStateLockHeld(t *testing.T, eng testsupport.Engine) {
	r := newRunner(t, Config{TerraformBinary: eng.Binary})
	j, _ := newJob(t, "slow")
	require.NoError(t, r.Init(context.Background(), j))

	holder := exec.Command(r.Binary(), "apply", "-auto-approve", "-input=false", "-no-color")
	holder.Dir = j.Dir
	holder.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+r.CLIConfigFile(), "CHECKPOINT_DISABLE=1")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	drained := make(chan struct{})
	locked := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Provisioning with 'local-exec'") {
				close(locked)
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		<-drained
		_ = holder.Wait()
	})
	select {
	case <-locked:
	case <-time.After(20 * time.Second):
		t.Fatal("the holding apply never reached its provisioner")
	}

	start := time.Now()
	_, err = r.Plan(context.Background(), j, PlanOptions{})
	e := asError(t, err)
	// A plan waiting for the lock would wait for the holder's 30 s sleep;
	// the bound leaves room for terraform's start-up on a loaded machine.
	assert.Less(t, time.Since(start), 20*time.Second, "the plan should fail at once, not wait for the lock")
	assert.Equal(t, errkind.StateLock, e.Kind)
	assert.Equal(t, "plan", e.Phase)
	require.NotNil(t, e.Lock)
	u, err := user.Current()
	require.NoError(t, err)
	host, err := os.Hostname()
	require.NoError(t, err)
	who := u.Username + "@" + host
	assert.Equal(t, who, e.Lock.Who)
	assert.Equal(t, "OperationTypeApply", e.Lock.Operation)
	assert.Equal(t, "terraform.tfstate", e.Lock.Path)
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, e.Lock.ID)
	assert.Contains(t, e.Msg, "the state is locked by "+who)
	assert.Contains(t, e.Msg, e.Lock.ID)
	assert.NoFileExists(t, filepath.Join(j.Dir, DefaultPlanFile))
}

func TestTerraformErrors(t *testing.T) { eachEngine(t, testTerraformErrors) }

func testTerraformErrors(t *testing.T, eng testsupport.Engine) {
	ctx := context.Background()
	r := newRunner(t, Config{TerraformBinary: eng.Binary})

	t.Run("failing precondition fails the plan", func(t *testing.T) {
		j, rec := newJob(t, "precondition")
		require.NoError(t, r.Init(ctx, j))
		_, err := r.Plan(ctx, j, PlanOptions{})
		e := asError(t, err)
		assert.Equal(t, errkind.Plan, e.Kind)
		assert.Equal(t, "terraform plan failed: Resource precondition failed: The ok variable must be true", e.Msg)
		assert.Contains(t, rec.all(), "Error: Resource precondition failed")
		assert.NoFileExists(t, filepath.Join(j.Dir, DefaultPlanFile), "a failed plan must not leave a plan file to apply")
	})
	t.Run("syntax error fails init", func(t *testing.T) {
		j, _ := newJob(t, "badhcl")
		e := asError(t, r.Init(ctx, j))
		assert.Equal(t, errkind.Init, e.Kind)
		assert.True(t, strings.HasPrefix(e.Msg, "terraform init failed: Unclosed configuration block"), e.Msg)
	})
	t.Run("missing run directory", func(t *testing.T) {
		_, err := r.Plan(ctx, Job{Dir: filepath.Join(t.TempDir(), "gone")}, PlanOptions{})
		assert.Equal(t, errkind.Plan, asError(t, err).Kind)
	})
	t.Run("already cancelled", func(t *testing.T) {
		j, _ := newJob(t, "basic")
		cctx, cancel := context.WithCancelCause(ctx)
		cancel(errkind.ErrCancelRequested)
		err := r.Init(cctx, j)
		assert.Equal(t, errkind.Cancelled, asError(t, err).Kind)
		assert.ErrorIs(t, err, errkind.ErrCancelRequested)
	})
}

// TestDriftAgainstMoto is the one test with the real AWS provider: apply a
// VPC and a security group to moto, confirm a clean re-plan, change a tag
// out of band, and expect the drift check to name the VPC's tags.
func TestDriftAgainstMoto(t *testing.T) { eachEngine(t, testDriftAgainstMoto) }

func testDriftAgainstMoto(t *testing.T, eng testsupport.Engine) {
	testsupport.TerraformCLIConfig(t) // fails with a clear message when the provider mirror is missing
	awsCLI, err := exec.LookPath("aws")
	if err != nil {
		t.Fatal("aws CLI not found on PATH: install awscli to change resources out of band in this test")
	}
	moto := testsupport.Moto(t)
	ctx := context.Background()
	r := newRunner(t, Config{TerraformBinary: eng.Binary, ProviderMirror: testsupport.ProviderMirror, ExtraEnv: moto.Env("us-east-1")})
	j, rec := newJob(t, "aws")

	require.NoError(t, r.Init(ctx, j))
	banner := map[string]string{"terraform": "Terraform", "opentofu": "OpenTofu"}[eng.Name]
	assert.Contains(t, rec.all(), banner+" has been successfully initialized!")
	res, err := r.Plan(ctx, j, PlanOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Summary.Add)
	require.NoError(t, r.Apply(ctx, j, res.PlanFile))
	outs, err := r.Outputs(ctx, j)
	require.NoError(t, err)
	var vpcID string
	require.NoError(t, json.Unmarshal(outs["vpc_id"].Value, &vpcID))
	require.True(t, strings.HasPrefix(vpcID, "vpc-"), vpcID)

	clean, err := r.Plan(ctx, j, PlanOptions{DetailedExitCode: true, PlanFile: "clean.tfplan"})
	require.NoError(t, err)
	assert.False(t, clean.Changes, "a fresh apply should re-plan clean: %+v", clean.Summary)
	assert.Nil(t, clean.Drift)

	tag := exec.Command(awsCLI, "--endpoint-url", moto.URL, "--region", "us-east-1",
		"ec2", "create-tags", "--resources", vpcID, "--tags", "Key=Name,Value=changed-out-of-band")
	tag.Env = os.Environ()
	for k, v := range moto.Env("us-east-1") {
		tag.Env = append(tag.Env, k+"="+v)
	}
	out, err := tag.CombinedOutput()
	require.NoError(t, err, "aws ec2 create-tags: %s", out)

	drifted, err := r.Plan(ctx, j, PlanOptions{DetailedExitCode: true, PlanFile: "drift.tfplan"})
	require.NoError(t, err)
	assert.True(t, drifted.Changes)
	assert.Equal(t, PlanSummary{Change: 1, Resources: []ResourceChange{{Address: "aws_vpc.this", Actions: []string{"update"}}}}, drifted.Summary)
	require.NotNil(t, drifted.Drift)
	require.Len(t, drifted.Drift.Resources, 1, "%+v", drifted.Drift)
	got := drifted.Drift.Resources[0]
	assert.Equal(t, "aws_vpc.this", got.Address)
	assert.Equal(t, "update", got.Action)
	assert.Equal(t, []string{"tags", "tags_all"}, got.Attributes)
	// The details say what the plan would put back, old -> new.
	assert.Contains(t, got.Changes, plandiff.Attribute{Path: "tags.Name", Action: "change", Old: "changed-out-of-band", New: "grape-drift"})
	assert.Contains(t, got.Changes, plandiff.Attribute{Path: "tags_all.Name", Action: "change", Old: "changed-out-of-band", New: "grape-drift"})
	b, err := json.Marshal(drifted.Drift)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"changes":[`)
}

// eachEngine runs fn as a parallel subtest under terraform and under
// OpenTofu: every phase must behave the same under both.
func eachEngine(t *testing.T, fn func(*testing.T, testsupport.Engine)) {
	for _, e := range testsupport.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, e)
		})
	}
}

func mustReal(t *testing.T, p string) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(p)
	require.NoError(t, err)
	return real
}

// TestNoShowWithoutChanges: a plan whose exit code says "no changes" is not
// read back with show -json (a provider schema load, ~3 s with AWS, for
// nothing); a plan with changes is.
func TestNoShowWithoutChanges(t *testing.T) { eachEngine(t, testNoShowWithoutChanges) }

func testNoShowWithoutChanges(t *testing.T, eng testsupport.Engine) {
	calls := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(t.TempDir(), "tf")
	script := fmt.Sprintf("#!/bin/sh\necho \"$1\" >> %q\nexec %q \"$@\"\n", calls, eng.Binary)
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))
	r := newRunner(t, Config{TerraformBinary: wrapper})
	j, _ := newJob(t, "basic")
	ctx := context.Background()
	require.NoError(t, r.Init(ctx, j))
	count := func(cmd string) int {
		b, err := os.ReadFile(calls)
		require.NoError(t, err)
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if l == cmd {
				n++
			}
		}
		return n
	}
	res, err := r.Plan(ctx, j, PlanOptions{})
	require.NoError(t, err)
	require.True(t, res.Changes)
	assert.Equal(t, 1, count("show"), "a plan with changes is summarised from show -json")
	require.NoError(t, r.Apply(ctx, j, res.PlanFile))

	res, err = r.Plan(ctx, j, PlanOptions{DetailedExitCode: true, PlanFile: "clean.tfplan"})
	require.NoError(t, err)
	assert.False(t, res.Changes)
	assert.Equal(t, PlanSummary{Resources: []ResourceChange{}}, res.Summary)
	assert.FileExists(t, res.PlanFile)
	assert.Equal(t, 1, count("show"), "no show -json for a plan without changes")
	assert.Equal(t, 2, count("plan"))
}
