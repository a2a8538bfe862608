package gitstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grapehq/grape/gitstore"
)

// moduleFiles are the files of one rendered golden module: ten files of a
// few KB, like the real VPC/EKS/RDS/Karpenter modules.
var moduleFiles = []string{
	"main.tf", "variables.tf", "outputs.tf", "versions.tf", "locals.tf",
	"data.tf", "iam.tf", "security.tf", "README.md", "templates/user-data.sh.tpl",
}

// rendering returns a synthetic rendered root module with the given modules:
// root files, tfvars whose values depend on variant (the intent), the
// provider lock file, and each module's sources under modules/<name>/.
func rendering(variant int, modules ...string) map[string][]byte {
	files := map[string][]byte{}
	var root strings.Builder
	root.WriteString("# Rendered by Grape. Do not edit: change the config instead.\n\n")
	for _, m := range modules {
		fmt.Fprintf(&root, "module %q {\n  source = \"./modules/%s\"\n  name   = var.name\n  tags   = var.tags\n}\n\n", m, m)
	}
	files["main.tf"] = []byte(root.String())
	files["variables.tf"] = []byte("variable \"name\" {\n  type = string\n}\n\nvariable \"tags\" {\n  type    = map(string)\n  default = {}\n}\n")
	files["versions.tf"] = []byte("terraform {\n  required_version = \">= 1.5\"\n  required_providers {\n    aws = {\n      source  = \"hashicorp/aws\"\n      version = \"~> 5.100\"\n    }\n  }\n}\n")
	files["outputs.tf"] = []byte("output \"name\" {\n  value = var.name\n}\n")
	files["generated.auto.tfvars.json"] = []byte(fmt.Sprintf(
		"{\n  \"name\": \"prod\",\n  \"node_count\": %d,\n  \"tags\": {\"team\": \"platform\", \"revision\": \"%d\"}\n}\n", 3+variant%5, variant))
	files[".terraform.lock.hcl"] = []byte("# This file is maintained automatically by \"terraform init\".\n" +
		"provider \"registry.terraform.io/hashicorp/aws\" {\n  version = \"5.100.0\"\n  hashes = [\n    \"h1:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=\",\n  ]\n}\n")
	for _, m := range modules {
		for i, f := range moduleFiles {
			files["modules/"+m+"/"+f] = []byte(moduleSource(m, f, 1500+300*i))
		}
	}
	return files
}

// moduleSource is plausible HCL of about size bytes.
func moduleSource(module, file string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s/%s — golden module %s\n\n", module, file, module)
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "resource \"terraform_data\" \"%s_%d\" {\n  input = {\n    module = %q\n    index  = %d\n    file   = %q\n  }\n}\n\n",
			module, i, module, i, file)
	}
	return b.String()
}

// change is a deployment of rendering(variant, modules...) to cluster/config.
func change(cluster, config string, deployment int, files map[string][]byte, modules ...string) gitstore.Change {
	return gitstore.Change{
		ClusterID:  cluster,
		ConfigName: config,
		Files:      files,
		Subject:    fmt.Sprintf("apply %s (cluster %s): %s", config, cluster, strings.Join(modules, ", ")),
		Body: func(previous map[string][]byte) string {
			if previous == nil {
				return "First deployment of this config."
			}
			return fmt.Sprintf("Re-rendered over %d previous files.", len(previous))
		},
		Trailers: []gitstore.Trailer{
			{Key: gitstore.TrailerDeployment, Value: fmt.Sprint(deployment)},
			{Key: gitstore.TrailerConfig, Value: config + "@v" + fmt.Sprint(deployment)},
			{Key: gitstore.TrailerCluster, Value: cluster},
			{Key: gitstore.TrailerAction, Value: "apply"},
		},
	}
}

var allModules = []string{"vpc", "eks", "rds", "karpenter"}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t testing.TB, opts gitstore.Options) *gitstore.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := gitstore.Open(testContext(t), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
