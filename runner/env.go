package runner

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-exec/tfexec"
)

// builtinAllow is what terraform and its providers need from the agent's
// environment. Entries ending in * are prefixes.
var builtinAllow = []string{
	"AWS_*", // credentials, region, profile, endpoint, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CA_BUNDLE
	"TF_*",  // TF_TOKEN_<host> registry credentials, TF_REGISTRY_*, … (minus the controlled ones below)
	"HOME",  // ~/.aws, ~/.terraform.d/credentials.tfrc.json, ~/.ssh (see the package doc)
	"PATH",
	"TMPDIR",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
	"http_proxy", "https_proxy", "no_proxy",
	// Go runtime tuning: terraform and its providers are Go programs, and
	// an operator sizing the agent's machine (GOMEMLIMIT in a small
	// container, GOGC to trade memory for CPU) means them too.
	"GOGC", "GOMEMLIMIT", "GOMAXPROCS",
}

// controlledTF are TF_* variables the runner never takes from the agent's
// environment: it sets them itself, or passing them would break isolation
// between runs. terraform-exec refuses a further set (TF_VAR_*, TF_CLI_ARGS*,
// TF_LOG*, TF_INPUT, …, see tfexec.ProhibitedEnv); those are dropped too, so
// variables reach terraform only through the tfvars files in the commit.
var controlledTF = map[string]string{
	"TF_CLI_CONFIG_FILE":  "the runner writes its own CLI config",
	"TF_DATA_DIR":         "it would make every run share one .terraform directory",
	"TF_PLUGIN_CACHE_DIR": "the runner's CLI config sets the shared plugin cache",
}

// neverPass names the agent's own secrets. They are refused even when an
// operator's allowlist pattern would match them.
var neverPass = []string{"GRAPE_*", "DATABASE_URL"}

// EnvSpec is everything BuildEnv combines into terraform's environment.
type EnvSpec struct {
	Environ       []string          // the agent's environment, os.Environ() form
	Allow         []string          // the operator's extra names or PREFIX* patterns
	Extra         map[string]string // Config.ExtraEnv
	Job           map[string]string // Job.Env
	CLIConfigFile string            // the runner's terraformrc
}

// BuildEnv returns the complete environment of a terraform process, apart
// from the few variables terraform-exec adds itself (TF_IN_AUTOMATION=1,
// TF_LOG*="" and its user agent). Later sources win: agent environment
// (allowlisted) < Extra < Job < the runner's own settings.
func BuildEnv(s EnvSpec) (map[string]string, error) {
	allow := append(append([]string(nil), builtinAllow...), s.Allow...)
	env := map[string]string{}
	for _, kv := range s.Environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || !matchAny(allow, k) || refused(k) != "" {
			continue
		}
		env[k] = v
	}
	for _, src := range []struct {
		name string
		m    map[string]string
	}{{"extra environment", s.Extra}, {"job environment", s.Job}} {
		for _, k := range sortedKeys(src.m) {
			if why := refused(k); why != "" {
				return nil, fmt.Errorf("%s sets %s, which is never passed to terraform: %s", src.name, k, why)
			}
			env[k] = src.m[k]
		}
	}
	env["TF_CLI_CONFIG_FILE"] = s.CLIConfigFile
	// No version checks or announcements from an unattended agent.
	env["CHECKPOINT_DISABLE"] = "1"
	return env, nil
}

// refused says why a variable may not reach terraform, or "" if it may.
func refused(k string) string {
	if matchAny(neverPass, k) {
		return "it is one of the agent's own secrets"
	}
	if why, ok := controlledTF[k]; ok {
		return why
	}
	if len(tfexec.ProhibitedEnv(map[string]string{k: ""})) > 0 {
		return "terraform-exec controls it (pass variables in tfvars files)"
	}
	return ""
}

// validateAllow rejects allowlist entries that could never work, so a typo
// fails at start-up instead of silently passing nothing. Prefix patterns that
// also cover refused names are fine: BuildEnv drops those names anyway.
func validateAllow(patterns []string) error {
	for _, p := range patterns {
		name := strings.TrimSuffix(p, "*")
		if name == "" || strings.ContainsAny(name, "=* \t") {
			return fmt.Errorf("environment allowlist entry %q: want a variable name or a prefix ending in *", p)
		}
		if !strings.HasSuffix(p, "*") {
			if why := refused(p); why != "" {
				return fmt.Errorf("environment allowlist entry %s is never passed to terraform: %s", p, why)
			}
		}
	}
	return nil
}

func matchAny(patterns []string, k string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		} else if k == p {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
