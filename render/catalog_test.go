package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	gitobject "github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/templates"
)

func TestDefaultCatalog(t *testing.T) {
	c := catalog(t)
	assert.Equal(t, []string{"vpc", "eks", "rds", "karpenter"}, c.ModuleNames())
	assert.Equal(t, "1.2.0", c.Version)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, c.Digest)
	assert.Equal(t, []string{"rds_master_password"}, c.SensitiveVariables())

	for _, m := range c.Modules() {
		assert.NotEmpty(t, m.Description, m.Name)
		assert.NotEmpty(t, m.Outputs, m.Name)
		for _, f := range []string{"variables.tf", "main.tf", "outputs.tf", "versions.tf", "README.md"} {
			assert.Contains(t, m.Files(), f, "module %s", m.Name)
		}
		tags, ok := m.Variable("tags")
		require.True(t, ok, "module %s has no tags input", m.Name)
		assert.Equal(t, cty.Map(cty.String), tags.Type)
		for _, v := range m.Variables {
			assert.NotEmpty(t, v.Description, "%s.%s has no description", m.Name, v.Name)
			// Every input has a default or is wired: {"modules": {...: {}}}
			// must be a valid intent.
			assert.True(t, v.Default != nil || v.Wiring != nil, "%s.%s is required and not wired", m.Name, v.Name)
		}
	}
	eks, _ := c.Module("eks")
	sub, _ := eks.Variable("subnet_ids")
	require.NotNil(t, sub.Wiring)
	assert.Equal(t, "vpc", sub.Wiring.From)
	assert.True(t, sub.Required)
	assert.Equal(t, "list(string)", sub.TypeExpr)
	addons, _ := eks.Variable("addons")
	assert.True(t, addons.Type.IsMapType())
	assert.Equal(t, "{}", addons.DefaultExpr)
	assert.Equal(t, "eks/variables.tf:2", mustVar(t, eks, "name").Pos)

	// The inputs whose change replaces the stack carry the template's reason.
	var marked []string
	for _, m := range c.Modules() {
		for _, v := range m.Variables {
			if v.StackIdentity {
				marked = append(marked, m.Name+"."+v.Name)
				assert.NotEmpty(t, v.StackIdentityWhy, "%s.%s", m.Name, v.Name)
			}
		}
	}
	assert.Equal(t, []string{"vpc.cidr", "eks.name", "rds.identifier"}, marked)
	vpc, _ := c.Module("vpc")
	assert.Equal(t, "a new CIDR replaces the VPC and everything in it", mustVar(t, vpc, "cidr").StackIdentityWhy)
}

func mustVar(t *testing.T, m *Module, name string) Variable {
	t.Helper()
	v, ok := m.Variable(name)
	require.True(t, ok, "%s.%s", m.Name, name)
	return v
}

// TestTemplateValidationsEvaluate evaluates every validation block of the
// embedded modules against the module defaults, with the functions Validate
// knows. Each must evaluate without error (else Validate would silently
// leave it to plan time) and the defaults must pass.
func TestTemplateValidationsEvaluate(t *testing.T) {
	c := catalog(t)
	for _, m := range c.Modules() {
		v := &validator{c: c, p: &problems{}, set: map[string]map[string]cty.Value{}}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(v.effectiveVars(m))},
			Functions: validationFuncs,
		}
		for _, vr := range m.Variables {
			for _, val := range vr.validations {
				hclsyntax.VisitAll(val.condition.(hclsyntax.Node), func(n hclsyntax.Node) hcl.Diagnostics {
					if call, ok := n.(*hclsyntax.FunctionCallExpr); ok {
						_, known := validationFuncs[call.Name]
						assert.True(t, known, "%s uses %s(), which Validate cannot evaluate", val.pos, call.Name)
					}
					return nil
				})
				res, diags := val.condition.Value(ctx)
				require.False(t, diags.HasErrors(), "%s: %v", val.pos, diags)
				if res.IsWhollyKnown() {
					assert.True(t, res.True(), "%s: the default of %s.%s fails its own validation", val.pos, m.Name, vr.Name)
				}
				msg, diags := val.message.Value(ctx)
				require.False(t, diags.HasErrors(), "%s: error_message: %v", val.pos, diags)
				assert.Equal(t, cty.String, msg.Type())
			}
		}
	}
}

// TestValidationFuncsMatchTerraform evaluates the functions Grape
// re-implements with both Grape and `terraform console`, so a static check
// never refuses what Terraform would accept.
func TestValidationFuncsMatchTerraform(t *testing.T) {
	exprs := []string{
		`cidrsubnet("10.0.0.0/16", 4, 8)`,
		`cidrsubnet("10.0.0.0/24", 4, 15)`,
		`cidrsubnet("10.0.0.1/16", 0, 0)`,
		`cidrsubnet("10.0.0.0/16", 4, 16)`,
		`cidrsubnet("10.0.0.0/30", 4, 0)`,
		`cidrsubnet("fd00:fd12:3456:7890::/56", 8, 3)`,
		`cidrhost("10.0.0.0/16", 5)`,
		`cidrhost("10.0.0.0/16", -1)`,
		`cidrhost("010.0.0.0/8", -1)`,
		`cidrhost("10.0.0.0/33", 0)`,
		`cidrhost("10.0.0.0/24", 256)`,
		`cidrhost("fd00::/64", 17)`,
		`cidrnetmask("10.0.0.0/16")`,
		`cidrnetmask("172.16.0.0/12")`,
		`cidrnetmask("fd00::/8")`,
		`cidrnetmask("office")`,
		`cidrnetmask("10.0.0.0")`,
		`cidrnetmask("256.0.0.0/8")`,
		`length("héllo")`,
		`length(["a", "b"])`,
		`length({ a = 1 })`,
		`alltrue([true, true])`,
		`alltrue([])`,
		`anytrue([false, true])`,
		`anytrue([])`,
		`startswith("arn:aws:iam", "arn:")`,
		`endswith("file.tf", ".json")`,
	}
	var parts []string
	for _, e := range exprs {
		parts = append(parts, fmt.Sprintf("try(tostring(%s), %q)", e, "ERROR"))
	}
	line := "jsonencode([" + strings.Join(parts, ", ") + "])"

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testsupport.TerraformBinary(t), "console", "-no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+testsupport.TerraformCLIConfig(t), "TF_IN_AUTOMATION=1")
	cmd.Stdin = strings.NewReader(line + "\n")
	out, err := cmd.Output()
	require.NoError(t, err, "terraform console: %s", out)
	var encoded string
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(out), &encoded), "console printed %s", out)
	var want []string
	require.NoError(t, json.Unmarshal([]byte(encoded), &want))
	require.Len(t, want, len(exprs))

	for i, e := range exprs {
		expr, diags := hclsyntax.ParseExpression([]byte(fmt.Sprintf("try(tostring(%s), %q)", e, "ERROR")), "test.hcl", hcl.InitialPos)
		require.False(t, diags.HasErrors(), "%s: %v", e, diags)
		got, diags := expr.Value(&hcl.EvalContext{Functions: validationFuncs})
		require.False(t, diags.HasErrors(), "%s: %v", e, diags)
		assert.Equal(t, want[i], got.AsString(), "%s: Grape and Terraform disagree", e)
	}
}

// templateSet returns the embedded set as a mutable map file system.
func templateSet(t *testing.T) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	require.NoError(t, fs.WalkDir(templates.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(templates.FS(), p)
		require.NoError(t, err)
		m[p] = &fstest.MapFile{Data: b, Mode: 0o644}
		return nil
	}))
	return m
}

func TestLoadErrors(t *testing.T) {
	appendTo := func(file, text string) func(fstest.MapFS) {
		return func(m fstest.MapFS) {
			m[file] = &fstest.MapFile{Data: append(bytes.Clone(m[file].Data), []byte("\n"+text+"\n")...)}
		}
	}
	replaceIn := func(file, old, new string) func(fstest.MapFS) {
		return func(m fstest.MapFS) {
			require.Contains(t, string(m[file].Data), old)
			m[file] = &fstest.MapFile{Data: []byte(strings.Replace(string(m[file].Data), old, new, 1))}
		}
	}
	cases := []struct {
		name   string
		change func(fstest.MapFS)
		want   string
	}{
		{"no VERSION", func(m fstest.MapFS) { delete(m, "VERSION") }, "template set has no VERSION file: add one holding the set's version, e.g. 1.0.0"},
		{"bad VERSION", func(m fstest.MapFS) { m["VERSION"] = &fstest.MapFile{Data: []byte("one two")} }, `template set VERSION "one two" is not a version`},
		{"bad module name", func(m fstest.MapFS) { m["My_Module/main.tf"] = &fstest.MapFile{Data: []byte("")} }, `module directory "My_Module": name must be lowercase letters and digits`},
		{"no .tf files", func(m fstest.MapFS) { m["extra/README.md"] = &fstest.MapFile{Data: []byte("# x")} }, "module extra: no .tf files in extra/"},
		{"JSON configuration", func(m fstest.MapFS) { m["vpc/extra.tf.json"] = &fstest.MapFile{Data: []byte("{}")} }, "module vpc: extra.tf.json: JSON configuration is not supported in templates; write it as .tf"},
		{"HCL syntax", appendTo("vpc/main.tf", `resource "x" {`), "module vpc: parsing vpc/main.tf:"},
		{"provider block", appendTo("rds/main.tf", `provider "aws" { region = "us-east-1" }`), "provider blocks are not allowed in a template module: the rendered root configures the provider"},
		{"backend block", appendTo("eks/versions.tf", "terraform {\n  backend \"s3\" {}\n}"), "a template module must not declare a backend: the rendered root does"},
		{"module source outside", appendTo("eks/main.tf", `module "x" { source = "../vpc" }`), `module source "../vpc" leaves the module directory`},
		{"duplicate variable", appendTo("vpc/main.tf", `variable "cidr" { type = string }`), `vpc/variables.tf:13: variable "cidr" is already declared at vpc/main.tf:`},
		{"reserved variable name", appendTo("vpc/main.tf", `variable "enabled" { type = bool }`), `variable name "enabled" is reserved: it switches a module on or off in the intent`},
		{"default of the wrong type", replaceIn("vpc/variables.tf", `default     = 2`, `default     = "two"`), `variable "az_count": default does not match type number`},
		{"default not literal", replaceIn("vpc/variables.tf", `default     = 2`, `default     = var.x`), `variable "az_count": default must be a literal value`},
		{"bad type", replaceIn("vpc/variables.tf", `type        = number`, `type        = numbr`), `variable "az_count": type:`},
		{"wired variable missing", replaceIn("eks/variables.tf", `variable "subnet_ids"`, `variable "subnets"`), `module eks: Grape wires module.vpc output private_subnet_ids into variable "subnet_ids", which the module does not declare`},
		{"wired output missing", replaceIn("vpc/outputs.tf", `output "private_subnet_ids"`, `output "private_subnets"`), `module vpc: Grape wires its output "private_subnet_ids" into module.eks.subnet_ids, but the module does not declare it`},
		{"file too large", func(m fstest.MapFS) {
			m["vpc/big.txt"] = &fstest.MapFile{Data: bytes.Repeat([]byte("x"), maxTemplateFileSize+1)}
		}, "template set: vpc/big.txt is 1048577 bytes; the limit is 1048576"},
		{"directive without reason", replaceIn("vpc/variables.tf", "variable \"az_count\"", "# grape:stack-identity\nvariable \"az_count\""),
			"vpc/variables.tf:29: `# grape:stack-identity` needs a reason after it on the same line"},
		{"unknown directive", replaceIn("vpc/variables.tf", "variable \"az_count\"", "# grape:force-new zones move\nvariable \"az_count\""),
			`vpc/variables.tf:29: unknown directive "grape:force-new": the only one is`},
		{"directive not above a variable", replaceIn("vpc/variables.tf", "variable \"az_count\"", "# grape:stack-identity zones move\n\nvariable \"az_count\""),
			"vpc/variables.tf:29: `# grape:stack-identity` must be on the line directly above a variable block"},
		{"directive above an output", replaceIn("vpc/outputs.tf", `output "private_subnet_ids"`, "// grape:stack-identity why\noutput \"private_subnet_ids\""),
			"must be on the line directly above a variable block"},
		{"odd file name", func(m fstest.MapFS) { m["vpc/a b.tf"] = &fstest.MapFile{Data: nil} }, `template set: file name "vpc/a b.tf" is not allowed`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := templateSet(t)
			tc.change(set)
			_, err := Load(set)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	// The unchanged copy loads, with the embedded set's digest.
	c, err := Load(templateSet(t))
	require.NoError(t, err)
	assert.Equal(t, catalog(t).Digest, c.Digest)
}

// writeSet writes a template set into dir.
func writeSet(t *testing.T, set fstest.MapFS, dir string) {
	t.Helper()
	for p, f := range set {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, f.Data, 0o644))
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeSet(t, templateSet(t), dir)
	// What a platform team's checkout also holds: ignored, digest unchanged.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "vpc", ".terraform", "providers"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vpc", ".terraform", "providers", "x"), []byte("binary"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("# our templates"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".gitignore"), []byte(".terraform/"), 0o644))

	c, err := LoadDir(dir)
	require.NoError(t, err)
	assert.Equal(t, catalog(t).Digest, c.Digest)

	// A change in content changes the digest, even with the same VERSION.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vpc", "README.md"), []byte("# vpc\n\nOurs.\n"), 0o644))
	c2, err := LoadDir(dir)
	require.NoError(t, err)
	assert.Equal(t, c.Version, c2.Version)
	assert.NotEqual(t, c.Digest, c2.Digest)
	m, _ := c2.Module("vpc")
	assert.Equal(t, "Ours.", m.Description)

	// Symlinks are refused: a set must be self-contained.
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(dir, "vpc", "passwd")))
	_, err = LoadDir(dir)
	require.ErrorContains(t, err, "vpc/passwd is not a regular file")

	_, err = LoadDir(filepath.Join(dir, "missing"))
	assert.ErrorContains(t, err, "loading templates from "+filepath.Join(dir, "missing"))
}

// TestLoadGit fetches a template set from a real git repository (a local
// one, over go-git's file transport) by tag, branch, commit and default
// branch, from a subdirectory, and sees a new commit on a later load.
func TestLoadGit(t *testing.T) {
	src := t.TempDir()
	repo, err := git.PlainInit(src, false)
	require.NoError(t, err)
	wt, err := repo.Worktree()
	require.NoError(t, err)
	sig := &gitobject.Signature{Name: "Platform", Email: "platform@example.com", When: time.Unix(1700000000, 0)}
	commit := func(msg string) plumbing.Hash {
		require.NoError(t, wt.AddGlob("."))
		h, err := wt.Commit(msg, &git.CommitOptions{Author: sig})
		require.NoError(t, err)
		return h
	}
	writeSet(t, templateSet(t), filepath.Join(src, "infra", "templates"))
	require.NoError(t, os.WriteFile(filepath.Join(src, "README.md"), []byte("# infra"), 0o644))
	first := commit("templates 1.0.0")
	_, err = repo.CreateTag("v1", first, &git.CreateTagOptions{Tagger: sig, Message: "v1"})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cache := t.TempDir()
	url := src + "//infra/templates"
	want := catalog(t).Digest

	for _, ref := range []string{"v1", "master", "refs/heads/master", first.String(), ""} {
		c, err := LoadGit(ctx, url, ref, cache)
		require.NoError(t, err, "ref %q", ref)
		assert.Equal(t, want, c.Digest, "ref %q", ref)
	}

	// A new commit on the branch: the next load fetches it; the tag stays.
	require.NoError(t, os.WriteFile(filepath.Join(src, "infra", "templates", "VERSION"), []byte("9.9.9-next\n"), 0o644))
	commit("templates 9.9.9-next")
	c, err := LoadGit(ctx, url, "master", cache)
	require.NoError(t, err)
	assert.Equal(t, "9.9.9-next", c.Version)
	c, err = LoadGit(ctx, url, "v1", cache)
	require.NoError(t, err)
	assert.Equal(t, catalog(t).Version, c.Version)

	_, err = LoadGit(ctx, url, "no-such-branch", cache)
	require.ErrorContains(t, err, `no branch, tag or commit "no-such-branch"`)
	_, err = LoadGit(ctx, src, "master", cache)
	require.ErrorContains(t, err, "template set has no VERSION file", "the repository root is not a template set")
	_, err = LoadGit(ctx, src+"//../etc", "master", cache)
	assert.ErrorContains(t, err, "must be a clean relative path")
}

func TestModuleTables(t *testing.T) {
	c := catalog(t)
	var b strings.Builder
	require.NoError(t, c.WriteModuleList(&b))
	assert.Equal(t, `MODULE     INPUTS  OUTPUTS  DESCRIPTION
vpc        11      9        A VPC with public and private subnets spread over `+"`az_count`"+` availability zones, an internet gateway, NAT gateways (one, one per zone, or none) and route tables.
eks        19      10       An EKS cluster with its IAM role, control plane logging to a CloudWatch log group with a retention, and one managed node group (AL2023, scaling from `+"`node_min_size` to `node_max_size`"+`).
rds        19      8        A PostgreSQL RDS instance in a DB subnet group, behind a security group that admits only PostgreSQL from the listed CIDR blocks (Grape wires the VPC's CIDR) and security groups.
karpenter  11      8        The AWS side of Karpenter for an EKS cluster, after the community karpenter submodule: the controller IAM role and policy, the node IAM role and instance profile, the node access entry, the interruption SQS queue with its policy, and EventBridge rules and targets for spot interruptions, rebalance recommendations, instance state changes and AWS Health events.
`, b.String())

	b.Reset()
	require.NoError(t, c.WriteModule(&b, "rds"))
	out := b.String()
	assert.Contains(t, out, "master_password             string        agent: TF_VAR_rds_master_password (else null)")
	assert.Contains(t, out, "subnet_ids                  list(string)  wired: module.vpc.private_subnet_ids")
	assert.Contains(t, out, "allocated_storage           number        20")
	assert.Contains(t, out, "OUTPUT                  DESCRIPTION")

	assert.EqualError(t, c.WriteModule(&b, "redis"), `no module "redis" in template set `+c.Version+`; modules: vpc, eks, rds, karpenter`)
}

// TestStackIdentityDirective reads `# grape:stack-identity` comments: only
// on the line directly above a variable block, in either comment style, and
// never inside a string.
func TestStackIdentityDirective(t *testing.T) {
	cases := []struct {
		name, src string
		wantWhy   string // "" when the variable is not marked
	}{
		{"hash comment", "# grape:stack-identity replaces the thing\nvariable \"x\" {\n  default = 1\n}\n", "replaces the thing"},
		{"slash comment, extra spaces", "//   grape:stack-identity \t replaces it  \nvariable \"x\" {\n  default = 1\n}\n", "replaces it"},
		{"other comment above", "# the x input\nvariable \"x\" {\n  default = 1\n}\n", ""},
		{"directive in a heredoc", "variable \"x\" {\n  default = <<EOT\n# grape:stack-identity not a comment\nEOT\n}\n", ""},
		{"block comment", "/* grape:stack-identity inside a block comment */\nvariable \"x\" {\n  default = 1\n}\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := fstest.MapFS{
				"VERSION":          {Data: []byte("1.0.0")},
				"mod/variables.tf": {Data: []byte(tc.src)},
				"mod/outputs.tf":   {Data: []byte("output \"o\" {\n  value = 1\n}\n")},
			}
			c, err := Load(set)
			require.NoError(t, err)
			m, _ := c.Module("mod")
			v := mustVar(t, m, "x")
			assert.Equal(t, tc.wantWhy != "", v.StackIdentity)
			assert.Equal(t, tc.wantWhy, v.StackIdentityWhy)
		})
	}
}
