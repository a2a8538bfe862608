package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/localenv"
)

const testRegion = "eu-central-1"

// syncBuffer collects terraform's output for the failure log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// terraformIn returns terraform-exec for a rendered directory, with the
// offline provider mirror and, when moto is given, the emulator's endpoint
// and dummy credentials in its environment. Its output is logged if the test
// fails.
func terraformIn(t *testing.T, dir string, moto *localenv.Moto) *tfexec.Terraform {
	t.Helper()
	tf, err := tfexec.NewTerraform(dir, testsupport.TerraformBinary(t))
	require.NoError(t, err)
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	env["TF_CLI_CONFIG_FILE"] = testsupport.TerraformCLIConfig(t)
	if moto != nil {
		for k, v := range moto.Env(testRegion) {
			env[k] = v
		}
	}
	for _, k := range tfexec.ProhibitedEnv(env) {
		delete(env, k)
	}
	require.NoError(t, tf.SetEnv(env))
	out := &syncBuffer{}
	tf.SetStdout(out)
	tf.SetStderr(out)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("terraform output in %s:\n%s", dir, out.tail(12000))
		}
	})
	return tf
}

func renderTo(t *testing.T, spec string) string {
	t.Helper()
	tree := renderSpec(t, catalog(t), []byte(spec))
	dir := filepath.Join(t.TempDir(), "rendering")
	require.NoError(t, tree.WriteDir(dir))
	return dir
}

// createBucket makes an S3 bucket in moto for a state backend (moto does not
// check request signatures).
func createBucket(t *testing.T, moto *localenv.Moto, bucket string) {
	t.Helper()
	body := `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>` + testRegion + `</LocationConstraint></CreateBucketConfiguration>`
	req, err := http.NewRequest(http.MethodPut, moto.URL+"/"+bucket, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "creating bucket %s: %s", bucket, b)
}

func bucketKeys(t *testing.T, moto *localenv.Moto, bucket string) []string {
	t.Helper()
	resp, err := http.Get(moto.URL + "/" + bucket + "?list-type=2")
	require.NoError(t, err)
	defer resp.Body.Close()
	var list struct {
		Contents []struct{ Key string }
	}
	require.NoError(t, xml.NewDecoder(resp.Body).Decode(&list))
	var keys []string
	for _, c := range list.Contents {
		keys = append(keys, c.Key)
	}
	return keys
}

// plannedModules runs plan -json and returns the modules with planned
// changes, by name.
func plannedModules(t *testing.T, ctx context.Context, tf *tfexec.Terraform) ([]string, bool) {
	t.Helper()
	var out bytes.Buffer
	changes, err := tf.PlanJSON(ctx, &out)
	require.NoError(t, err)
	seen := map[string]bool{}
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var msg struct {
			Type   string `json:"type"`
			Change struct {
				Resource struct {
					Module string `json:"module"`
				} `json:"resource"`
			} `json:"change"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) != nil || msg.Type != "planned_change" {
			continue
		}
		name := strings.TrimPrefix(msg.Change.Resource.Module, "module.")
		name, _, _ = strings.Cut(name, "[")
		name, _, _ = strings.Cut(name, ".")
		seen[name] = true
	}
	return sortedKeys(seen), changes
}

// TestRenderedTreesTerraform runs terraform itself on renderings of four
// module combinations: fmt -check, init, validate, and a plan against moto
// that must touch exactly the enabled modules — the count = 0 modules and
// the wiring around them must evaluate cleanly.
func TestRenderedTreesTerraform(t *testing.T) {
	t.Parallel()
	moto := testsupport.Moto(t)
	combos := []struct {
		name    string
		spec    string
		modules []string
	}{
		{"all on", `{"modules": {"vpc": {}, "eks": {}, "rds": {}, "karpenter": {}}}`, []string{"eks", "karpenter", "rds", "vpc"}},
		{"vpc only", `{"region": "eu-central-1", "modules": {"vpc": {}}}`, []string{"vpc"}},
		{"vpc and rds", `{"modules": {"vpc": {"az_count": 3, "nat_gateway": "per_az"}, "rds": {}}}`, []string{"rds", "vpc"}},
		{"none", `{}`, []string{}},
	}
	for _, tc := range combos {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			dir := renderTo(t, tc.spec)
			tf := terraformIn(t, dir, moto)

			ok, files, err := tf.FormatCheck(ctx, tfexec.Recursive(true))
			require.NoError(t, err)
			assert.True(t, ok, "terraform fmt would change %v", files)

			// As the agent does: local state outside the rendering.
			require.NoError(t, tf.Init(ctx, tfexec.BackendConfig("path="+filepath.Join(t.TempDir(), "terraform.tfstate"))))
			v, err := tf.Validate(ctx)
			require.NoError(t, err)
			assert.True(t, v.Valid, "terraform validate: %+v", v.Diagnostics)
			assert.Zero(t, v.ErrorCount)
			assert.Zero(t, v.WarningCount, "terraform validate warnings: %+v", v.Diagnostics)

			modules, changes := plannedModules(t, ctx, tf)
			assert.Equal(t, tc.modules, modules)
			assert.Equal(t, len(tc.modules) > 0, changes)
		})
	}
}

// TestLiteralStringsThroughTerraform renders "${...}" and "%{...}" in an
// input value and in the S3 state key, and checks with terraform and moto
// that both stay literal strings: Terraform reads the tfvars value as
// written and stores state under the key as written.
func TestLiteralStringsThroughTerraform(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	moto := testsupport.Moto(t)
	createBucket(t, moto, "literal-state")
	const key = "literal/${not-a-var}/%{not-a-directive}/terraform.tfstate"
	spec := fmt.Sprintf(`{
		"modules": {"vpc": {}, "eks": {"node_labels": {"template": "${var.region}", "directive": "%%{ if true }yes%%{ endif }"}}},
		"backend": {"type": "s3", "bucket": "literal-state", "key": %q, "use_path_style": true, "endpoint": %q}
	}`, key, moto.URL)
	dir := renderTo(t, spec)
	tf := terraformIn(t, dir, moto)
	require.NoError(t, tf.Init(ctx))

	cmd := exec.CommandContext(ctx, testsupport.TerraformBinary(t), "console", "-no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+testsupport.TerraformCLIConfig(t), "TF_IN_AUTOMATION=1")
	for k, v := range moto.Env(testRegion) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader("jsonencode(var.eks_node_labels)\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "terraform console: %s", out)
	var labels string
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(out), &labels), "console printed %s", out)
	assert.JSONEq(t, `{"template": "${var.region}", "directive": "%{ if true }yes%{ endif }"}`, labels)

	// Writing state puts it under the key exactly as the intent spelled it.
	state := filepath.Join(t.TempDir(), "empty.tfstate")
	require.NoError(t, os.WriteFile(state, []byte(`{"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": "5f3c2a1e-0000-4000-8000-000000000001", "outputs": {}, "resources": []}`), 0o644))
	require.NoError(t, tf.StatePush(ctx, state))
	assert.Contains(t, bucketKeys(t, moto, "literal-state"), key)
}

// motoOverride is written into the rendering's copy of the eks module by
// TestMotoEndToEnd only. moto answers three EKS calls unlike AWS: it returns
// no access_config for a cluster, drops the update_config a node group is
// created with (moto/eks/responses.py create_nodegroup never reads it), and
// invents remote_access { ec2_ssh_key = "eksKeypair" } on node groups. Each
// would show on every re-plan (two as replacements); AWS echoes what was
// sent, so the production module stays as it is and the test ignores
// exactly these attributes.
const motoOverride = `# TEST ONLY (render.TestMotoEndToEnd): moto quirks, not drift; see the test.
resource "aws_eks_cluster" "this" {
  lifecycle {
    ignore_changes = [access_config]
  }
}

resource "aws_eks_node_group" "default" {
  lifecycle {
    # desired_size repeats the module's own ignore_changes, which an
    # override replaces rather than extends.
    ignore_changes = [remote_access, update_config, scaling_config[0].desired_size]
  }
}
`

// TestMotoEndToEnd renders all four modules and takes them through the
// agent's life cycle against moto with the real AWS provider: init with the
// S3 backend, plan, apply the saved plan, re-plan with -detailed-exitcode
// (no changes), and destroy. It takes about four minutes here.
func TestMotoEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	moto := testsupport.Moto(t)
	createBucket(t, moto, "grape-e2e-state")

	spec := fmt.Sprintf(`{
		"region": %q,
		"environment": "e2e",
		"tags": {"team": "platform"},
		"modules": {
			"vpc": {},
			"eks": {},
			"rds": {"deletion_protection": false, "skip_final_snapshot": true},
			"karpenter": {"create_access_entry": false}
		},
		"backend": {"type": "s3", "bucket": "grape-e2e-state", "use_path_style": true, "endpoint": %q}
	}`, testRegion, moto.URL)
	// Intent choices for the test, each visible here: RDS deletion
	// protection and the final snapshot are production defaults a person
	// turns off before destroying; moto has no EKS access-entry API, so
	// Karpenter's node access entry is off. EKS add-ons are off by default
	// (moto has no add-on API either).
	dir := renderTo(t, spec)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "modules", "eks", "moto_override.tf"), []byte(motoOverride), 0o644))
	tf := terraformIn(t, dir, moto)

	require.NoError(t, tf.Init(ctx))
	plan := filepath.Join(t.TempDir(), "apply.tfplan")
	changes, err := tf.Plan(ctx, tfexec.Out(plan))
	require.NoError(t, err)
	require.True(t, changes)

	start := time.Now()
	require.NoError(t, tf.Apply(ctx, tfexec.DirOrPlan(plan)))
	t.Logf("apply took %s", time.Since(start).Round(time.Second))
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			_ = tf.Destroy(context.Background())
		}
	})

	outputs, err := tf.Output(ctx)
	require.NoError(t, err)
	str := func(name string) string {
		o, ok := outputs[name]
		require.True(t, ok, "output %s", name)
		var s string
		require.NoError(t, json.Unmarshal(o.Value, &s), "output %s = %s", name, o.Value)
		return s
	}
	assert.Regexp(t, `^vpc-`, str("vpc_vpc_id"))
	assert.Equal(t, "grape", str("eks_cluster_name"))
	assert.Equal(t, "Karpenter-grape", str("karpenter_queue_name"))
	assert.Regexp(t, `^arn:aws:secretsmanager:`, str("rds_master_user_secret_arn"), "the RDS password is managed by Secrets Manager")

	state, err := tf.Show(ctx)
	require.NoError(t, err)
	vpc := findResource(state, "module.vpc[0].aws_vpc.this")
	require.NotNil(t, vpc, "module.vpc[0].aws_vpc.this in state")
	assert.Equal(t, map[string]any{
		"Name": "grape", "team": "platform",
		"grape:cluster": "prod-eu", "grape:config": "platform", "grape:environment": "e2e",
	}, vpc.AttributeValues["tags"])
	assert.Contains(t, bucketKeys(t, moto, "grape-e2e-state"), DefaultStateKey(testMeta), "state is in S3 under the default key")

	start = time.Now()
	replan := filepath.Join(t.TempDir(), "replan.tfplan")
	changes, err = tf.Plan(ctx, tfexec.Out(replan))
	require.NoError(t, err)
	t.Logf("re-plan took %s", time.Since(start).Round(time.Second))
	if changes {
		p, err := tf.ShowPlanFile(ctx, replan)
		require.NoError(t, err)
		t.Errorf("a re-plan right after apply must find no changes (exit code 0); it plans:\n%s", describeChanges(p))
	}

	start = time.Now()
	require.NoError(t, tf.Destroy(ctx))
	destroyed = true
	t.Logf("destroy took %s", time.Since(start).Round(time.Second))
	state, err = tf.Show(ctx)
	require.NoError(t, err)
	assert.Empty(t, allResources(state), "resources left after destroy")
}

func allResources(s *tfjson.State) []*tfjson.StateResource {
	if s == nil || s.Values == nil {
		return nil
	}
	var out []*tfjson.StateResource
	var walk func(m *tfjson.StateModule)
	walk = func(m *tfjson.StateModule) {
		if m == nil {
			return
		}
		out = append(out, m.Resources...)
		for _, c := range m.ChildModules {
			walk(c)
		}
	}
	walk(s.Values.RootModule)
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func findResource(s *tfjson.State, addr string) *tfjson.StateResource {
	for _, r := range allResources(s) {
		if r.Address == addr {
			return r
		}
	}
	return nil
}

// describeChanges lists a plan's non-no-op changes with the attributes that
// differ, for a failure message.
func describeChanges(p *tfjson.Plan) string {
	var b strings.Builder
	for _, rc := range p.ResourceChanges {
		if rc.Change == nil || rc.Change.Actions.NoOp() || rc.Change.Actions.Read() {
			continue
		}
		fmt.Fprintf(&b, "  %s %v\n", rc.Address, rc.Change.Actions)
		before, _ := rc.Change.Before.(map[string]any)
		after, _ := rc.Change.After.(map[string]any)
		keys := map[string]bool{}
		for k := range before {
			keys[k] = true
		}
		for k := range after {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			bj, _ := json.Marshal(before[k])
			aj, _ := json.Marshal(after[k])
			if !bytes.Equal(bj, aj) {
				fmt.Fprintf(&b, "      %s: %s -> %s\n", k, bj, aj)
			}
		}
	}
	return b.String()
}
