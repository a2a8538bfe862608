package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/grapehq/grape/render"
)

// templateFlags select the golden template set: the embedded one by default,
// or a platform team's own (a directory, or a git repository at a ref).
type templateFlags struct {
	dir, gitURL, gitRef string
}

func (t *templateFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.dir, "templates", "", "use the template modules in this directory instead of the embedded set")
	fs.StringVar(&t.gitURL, "templates-git", "", "use the template modules of this git repository (with --templates-ref)")
	fs.StringVar(&t.gitRef, "templates-ref", "main", "branch, tag or commit of --templates-git")
}

// catalog loads and checks the selected template set. cacheDir holds a git
// checkout between runs.
func (t *templateFlags) catalog(ctx context.Context, cacheDir string) (*render.Catalog, error) {
	switch {
	case t.dir != "" && t.gitURL != "":
		return nil, usagef("--templates and --templates-git are exclusive: pick one template set")
	case t.dir != "":
		cat, err := render.LoadDir(t.dir)
		if err != nil {
			return nil, fmt.Errorf("--templates %s: %w", t.dir, err)
		}
		return cat, nil
	case t.gitURL != "":
		if cacheDir == "" {
			dir, err := os.MkdirTemp("", "grape-templates-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			cacheDir = dir
		}
		cat, err := render.LoadGit(ctx, t.gitURL, t.gitRef, cacheDir)
		if err != nil {
			return nil, fmt.Errorf("--templates-git: %w", err)
		}
		return cat, nil
	}
	return render.Default()
}

// validate checks an intent against the selected templates and returns it
// normalised, as it will be stored.
func (t *templateFlags) validate(ctx context.Context, spec []byte) ([]byte, error) {
	cat, err := t.catalog(ctx, "")
	if err != nil {
		return nil, err
	}
	in, err := cat.Validate(spec)
	if err != nil {
		return nil, err
	}
	return in.JSON(), nil
}

func init() {
	register(&command{name: "templates", summary: "inspect the golden template modules (list, show)"})
	register(&command{
		name:    "templates list",
		summary: "list the template modules and the set's version",
		flags: func(fs *flag.FlagSet) runFunc {
			var t templateFlags
			t.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				cat, err := t.catalog(ctx, "")
				if err != nil {
					return err
				}
				fmt.Fprintf(cio.stdout, "template set %s (%s)\n\n", cat.Version, cat.Digest)
				return cat.WriteModuleList(cio.stdout)
			}
		},
	})
	register(&command{
		name:    "templates show",
		args:    "MODULE",
		summary: "show a template module's inputs: type, default, description",
		flags: func(fs *flag.FlagSet) runFunc {
			var t templateFlags
			t.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) != 1 {
					return usagef("want one module name")
				}
				cat, err := t.catalog(ctx, "")
				if err != nil {
					return err
				}
				if _, ok := cat.Module(args[0]); !ok {
					return usagef("no module %q: the modules are %v", args[0], cat.ModuleNames())
				}
				return cat.WriteModule(cio.stdout, args[0])
			}
		},
	})
	register(&command{
		name:    "render",
		summary: "render an intent to a Terraform root module offline, for review",
		long: `Validates the intent exactly as the agent does and writes the tree the agent
would commit (root module, tfvars, intent.json and the template modules) to --out.
No database, no git, no terraform.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var t templateFlags
			var file, out, cluster, name string
			fs.StringVar(&file, "f", "", "intent JSON file (- for stdin)")
			fs.StringVar(&out, "out", "", "directory to write the root module to (must be empty or absent)")
			fs.StringVar(&cluster, "cluster", "local", "cluster id to render for (tags, state key)")
			fs.StringVar(&name, "name", "review", "config name to render for (tags, state key)")
			t.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if out == "" {
					return usagef("--out DIR is required")
				}
				spec, err := readSpec(file, cio.stdin)
				if err != nil {
					return err
				}
				cat, err := t.catalog(ctx, "")
				if err != nil {
					return err
				}
				in, err := cat.Validate(spec)
				if err != nil {
					return err
				}
				tree, err := cat.Render(in, render.Meta{ClusterID: cluster, ConfigID: name, ConfigName: name})
				if err != nil {
					return err
				}
				if err := tree.WriteDir(out); err != nil {
					return err
				}
				fmt.Fprintf(cio.stdout, "rendered %d files to %s (modules: %v; templates %s)\n", len(tree.Files), out, in.EnabledModules(), cat.Version)
				return nil
			}
		},
	})
}
