package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// vpcRDS is a VPC (no NAT, to keep moto quick) with a PostgreSQL instance,
// its state in S3 (moto) with a lock file.
func vpcRDS(cluster, retention string) string {
	return fmt.Sprintf(`{
  "region": %q,
  "environment": "e2e",
  "tags": {"team": "platform"},
  "modules": {
    "vpc": {"nat_gateway": "none"},
    "rds": {"identifier": "e2e-db", "deletion_protection": false, "skip_final_snapshot": true, "backup_retention_period": %s}
  },
  "backend": {"type": "s3", "bucket": "grape-state", "key": "%s/lifecycle.tfstate", "region": %q, "use_path_style": true}
}`, region, retention, cluster, region)
}

// TestDeployLifecycle: apply VPC + RDS through a real agent process (with the
// database restarted mid-apply), change one input (1 to change), destroy.
// Every step is checked on the data: the deployment rows, every log line, the
// audit repository as a reviewer sees it, the state in S3, and a scan for the
// run's secrets everywhere Grape writes.
func TestDeployLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{ownPostgres: true})
	awsSecret := "canary-aws-secret-" + uuid.NewString()
	dbPassword := "canary-db-password-" + uuid.NewString()
	e.agentEnv["AWS_SECRET_ACCESS_KEY"] = awsSecret // moto accepts any secret
	e.agentEnv["TF_VAR_rds_master_password"] = dbPassword
	e.aws("s3api", "create-bucket", "--bucket", "grape-state", "--create-bucket-configuration", "LocationConstraint="+region)

	cfg := e.config("lifecycle", vpcRDS(e.cluster, "7"))
	e.startAgent("agent-1")

	// 1. Apply, with PostgreSQL restarted while terraform applies.
	d := e.deploy(cfg, store.ActionApply)
	e.waitPhase(d.ID, store.PhaseApply, 3*time.Minute)
	// terraform is creating resources (moto takes seconds for the RDS
	// instance), and the row still says apply: the restart lands during
	// the apply, not after it.
	e.waitLogLine(d.ID, "Creating...", 2*time.Minute)
	during, err := e.st.GetDeployment(e.ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, store.PhaseApply, during.PhaseName(), "the apply ended before PostgreSQL could be restarted during it")
	e.restartPostgres()
	// The test's own pool may hand out a connection the restart ended (it
	// was used too recently to be pinged): a failed query drops it.
	require.Eventually(t, func() bool { _, err := e.st.GetDeployment(e.ctx, d.ID); return err == nil }, time.Minute, 100*time.Millisecond)
	applied := e.wait(d.ID, 6*time.Minute, store.StatusSucceeded)
	lines := e.logs(d.ID)
	requireGapless(t, lines)
	var summary runner.PlanSummary
	require.NoError(t, json.Unmarshal(applied.PlanSummary, &summary))
	require.Positive(t, summary.Add)
	require.Zero(t, summary.Change+summary.Destroy)
	requireApplyLog(t, lines, summary)
	requireOrder(t, lines, "[agent] phase: render", "[agent] phase: commit", "[agent] phase: init", "[agent] phase: plan", "[agent] phase: apply", "[agent] succeeded")
	// The providers come from the committed lock file: no warning about
	// checksums terraform had to compute itself, and the diff (not one line
	// per resource) precedes terraform's summary.
	require.NotContains(t, joinLines(lines), "Incomplete lock file information")
	requireOrder(t, lines, "Terraform will perform the following actions:", "will be created", "(sensitive value)", "Plan: ")
	var created plandiff.Diff
	require.NoError(t, json.Unmarshal(applied.PlanDiff, &created))
	require.Len(t, created.Resources, summary.Add)
	password := findAttribute(t, created, "aws_db_instance", "password")
	require.True(t, password.Sensitive, "%+v", password)
	require.Nil(t, password.New)

	// The row's commit is the remote's tip, holds the rendering of exactly
	// this intent, and is what the agent said it committed.
	sha := deref(applied.CommitSHA)
	require.Equal(t, sha, strings.Fields(e.git("rev-parse", "main"))[0])
	requireLine(t, lines, "committed "+sha)
	e.fsck()
	msg := e.git("log", "-1", "--format=%B", sha)
	require.Contains(t, msg, "apply lifecycle (cluster e2e): vpc, rds")
	require.Contains(t, msg, "Grape-Deployment: "+d.ID.String())
	require.Contains(t, msg, fmt.Sprintf("Grape-Config: %s@v1", cfg.ID))
	committedIntent := e.git("show", sha+":clusters/e2e/"+cfg.ID.String()+"/intent.json")
	requireSameJSON(t, string(cfg.Spec), committedIntent)

	// The state in S3 knows the resources the plan said it would create.
	e.aws("s3api", "head-object", "--bucket", "grape-state", "--key", "e2e/lifecycle.tfstate")
	require.Contains(t, e.aws("rds", "describe-db-instances"), `"DBInstanceIdentifier": "e2e-db"`)

	// 2. Change one input: exactly one resource changes in place.
	cfg = e.config("lifecycle", vpcRDS(e.cluster, "3"))
	require.Equal(t, 2, cfg.Version)
	d2 := e.deploy(cfg, store.ActionApply)
	changed := e.wait(d2.ID, 5*time.Minute, store.StatusSucceeded)
	require.NoError(t, json.Unmarshal(changed.PlanSummary, &summary))
	require.Equal(t, [3]int{0, 1, 0}, [3]int{summary.Add, summary.Change, summary.Destroy}, "plan summary %s", changed.PlanSummary)
	lines2 := e.logs(d2.ID)
	requireGapless(t, lines2)
	requireLine(t, lines2, "Plan: 0 to add, 1 to change, 0 to destroy.")
	// The reviewer sees exactly what changes, in the log and on the row.
	requireOrder(t, lines2, "will be updated in-place", "~ backup_retention_period", "7 -> 3", "Plan: 0 to add, 1 to change, 0 to destroy.")
	var diff plandiff.Diff
	require.NoError(t, json.Unmarshal(changed.PlanDiff, &diff))
	require.Len(t, diff.Resources, 1, "%s", changed.PlanDiff)
	require.Equal(t, "update", diff.Resources[0].Action)
	require.Contains(t, diff.Resources[0].Attributes, plandiff.Attribute{Path: "backup_retention_period", Action: "change", Old: float64(7), New: float64(3)})
	require.Contains(t, e.git("ls-tree", "--name-only", deref(changed.CommitSHA), "clusters/e2e/"+cfg.ID.String()+"/"), ".terraform.lock.hcl", "the provider lock file is committed with the rendering")
	body := e.git("log", "-1", "--format=%b", deref(changed.CommitSHA))
	require.Contains(t, body, "modules.rds.backup_retention_period: 7 → 3")
	require.Contains(t, e.aws("rds", "describe-db-instances"), `"BackupRetentionPeriod": 3`)

	// 3. Destroy. Deleting a VPC and a database needs a person (the
	// default policy pack warns), even on a config that does not require
	// approval: the run parks with the warnings, and applies once approved.
	d3 := e.deploy(cfg, store.ActionDestroy)
	parked := e.wait(d3.ID, 5*time.Minute, store.StatusAwaitingApproval)
	require.Contains(t, string(parked.Policy), "aws_db_instance")
	require.Contains(t, string(parked.Policy), "aws_vpc")
	e.grape("approve", d3.ID.String())
	destroyed := e.wait(d3.ID, 5*time.Minute, store.StatusSucceeded)
	require.NoError(t, json.Unmarshal(destroyed.PlanSummary, &summary))
	require.Len(t, summary.Resources, summary.Destroy)
	// A destroy is a saved -destroy plan, applied: terraform says "Apply complete!".
	requireLine(t, e.logs(d3.ID), fmt.Sprintf("Apply complete! Resources: 0 added, 0 changed, %d destroyed.", summary.Destroy))
	require.NotContains(t, e.aws("rds", "describe-db-instances"), "e2e-db")
	require.Len(t, strings.Split(strings.TrimSpace(e.git("log", "--format=%H", "main")), "\n"), 3, "one commit per deployment")

	// 4. The secrets of the run are nowhere: not in any table, not in any
	// object of the audit repository (raw, URL-encoded or base64).
	for _, secret := range []string{awsSecret, dbPassword} {
		e.requireNowhere(secret)
	}
}

// findAttribute returns the one attribute at path of the diff's resource
// of type typ.
func findAttribute(t *testing.T, d plandiff.Diff, typ, path string) plandiff.Attribute {
	t.Helper()
	for _, r := range d.Resources {
		if !strings.Contains(r.Address, typ+".") {
			continue
		}
		for _, a := range r.Attributes {
			if a.Path == path {
				return a
			}
		}
	}
	t.Fatalf("no %s attribute %s in the diff", typ, path)
	return plandiff.Attribute{}
}

// requireApplyLog checks every planned resource was reported created, in
// order, before terraform's final "Apply complete!" line.
func requireApplyLog(t *testing.T, lines []store.LogLine, s runner.PlanSummary) {
	t.Helper()
	text := joinLines(lines)
	done := strings.Index(text, "Apply complete! Resources: ")
	require.Positive(t, done, "no Apply complete! line")
	for _, r := range s.Resources {
		creating := strings.Index(text, r.Address+": Creating...")
		created := strings.Index(text, r.Address+": Creation complete")
		require.True(t, creating >= 0 && created > creating && created < done, "%s: Creating... then Creation complete before Apply complete!", r.Address)
	}
	require.Contains(t, text, fmt.Sprintf("Apply complete! Resources: %d added, 0 changed, 0 destroyed.", s.Add))
}

func joinLines(lines []store.LogLine) string {
	var b strings.Builder
	for _, l := range lines {
		if l.Stream == store.StreamAgent {
			b.WriteString("[agent] ")
		}
		b.WriteString(l.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

func requireLine(t *testing.T, lines []store.LogLine, substr string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l.Line, substr) {
			return
		}
	}
	t.Fatalf("no log line contains %q:\n%s", substr, joinLines(lines))
}

// requireOrder checks the substrings appear in this order in the log.
func requireOrder(t *testing.T, lines []store.LogLine, substrs ...string) {
	t.Helper()
	text := joinLines(lines)
	at := 0
	for _, s := range substrs {
		i := strings.Index(text[at:], s)
		require.GreaterOrEqual(t, i, 0, "%q missing or out of order in the log:\n%s", s, text)
		at += i + len(s)
	}
}

func requireSameJSON(t *testing.T, want, got string) {
	t.Helper()
	var a, b any
	require.NoError(t, json.Unmarshal([]byte(want), &a))
	require.NoError(t, json.Unmarshal([]byte(got), &b))
	require.Equal(t, a, b)
}

// requireNowhere scans every table Grape writes and every object of the
// audit repository for a secret, in the forms it could leak in.
func (e *env) requireNowhere(secret string) {
	e.t.Helper()
	forms := []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))}
	for _, table := range []string{"clusters", "agents", "configs", "config_versions", "deployments", "deployment_logs", "drift_reports"} {
		for _, f := range forms {
			var n int
			err := e.pool.QueryRow(e.ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE strpos(t::text, $1) > 0`, table), f).Scan(&n)
			require.NoError(e.t, err)
			require.Zero(e.t, n, "secret found in table %s", table)
		}
	}
	cmd := exec.CommandContext(e.ctx, "git", "cat-file", "--batch-all-objects", "--batch")
	cmd.Dir = e.repoDir
	objects, err := cmd.Output()
	require.NoError(e.t, err)
	require.NotEmpty(e.t, objects)
	for _, f := range forms {
		require.NotContains(e.t, string(objects), f, "secret found in the audit repository")
	}
}
