package runner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuildEnv(t *testing.T) {
	agent := []string{
		"HOME=/home/agent",
		"PATH=/usr/bin:/bin",
		"TMPDIR=/var/tmp",
		"AWS_PROFILE=prod",
		"AWS_CONFIG_FILE=/home/agent/.aws/config",
		"AWS_SHARED_CREDENTIALS_FILE=/home/agent/.aws/credentials",
		"TF_TOKEN_app_terraform_io=registry-token",
		"HTTPS_PROXY=http://proxy:3128",
		"no_proxy=.internal",
		"SSL_CERT_FILE=/etc/ssl/certs/ca.pem",
		"GOMEMLIMIT=1GiB",
		// never passed:
		"GOFLAGS=-mod=mod",
		"GRAPE_DATABASE_URL=postgres://grape:pw@db/grape",
		"GRAPE_GIT_TOKEN=ghp_secret",
		"DATABASE_URL=postgres://app:pw@db/app",
		"GITHUB_TOKEN=ghp_other",
		"TF_VAR_password=hunter2",
		"TF_CLI_ARGS=-auto-approve",
		"TF_CLI_ARGS_plan=-refresh=false",
		"TF_LOG=TRACE",
		"TF_DATA_DIR=/shared/.terraform",
		"TF_PLUGIN_CACHE_DIR=/elsewhere",
		"TF_CLI_CONFIG_FILE=/home/agent/.terraformrc",
		"TF_WORKSPACE=prod",
		"KUBECONFIG=/home/agent/.kube/config",
		"MYCORP_CA=/etc/mycorp.pem",
		"MYCORP_REGION=eu",
		"MALFORMED",
	}
	tests := []struct {
		name    string
		spec    EnvSpec
		want    map[string]string
		wantErr string
	}{
		{
			name: "built-in allowlist only",
			spec: EnvSpec{Environ: agent, CLIConfigFile: "/data/terraformrc"},
			want: map[string]string{
				"HOME":                        "/home/agent",
				"PATH":                        "/usr/bin:/bin",
				"TMPDIR":                      "/var/tmp",
				"AWS_PROFILE":                 "prod",
				"AWS_CONFIG_FILE":             "/home/agent/.aws/config",
				"AWS_SHARED_CREDENTIALS_FILE": "/home/agent/.aws/credentials",
				"TF_TOKEN_app_terraform_io":   "registry-token",
				"HTTPS_PROXY":                 "http://proxy:3128",
				"no_proxy":                    ".internal",
				"SSL_CERT_FILE":               "/etc/ssl/certs/ca.pem",
				"GOMEMLIMIT":                  "1GiB",
				"TF_CLI_CONFIG_FILE":          "/data/terraformrc",
				"CHECKPOINT_DISABLE":          "1",
			},
		},
		{
			name: "operator allowlist, extra and job env, in that order",
			spec: EnvSpec{
				Environ:       agent,
				Allow:         []string{"KUBECONFIG", "MYCORP_*", "GRAPE_*", "DATABASE*"},
				Extra:         map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_PROFILE": "extra"},
				Job:           map[string]string{"AWS_PROFILE": "job", "MYCORP_REGION": "us"},
				CLIConfigFile: "/data/terraformrc",
			},
			want: map[string]string{
				"HOME":                        "/home/agent",
				"PATH":                        "/usr/bin:/bin",
				"TMPDIR":                      "/var/tmp",
				"AWS_PROFILE":                 "job",
				"AWS_CONFIG_FILE":             "/home/agent/.aws/config",
				"AWS_SHARED_CREDENTIALS_FILE": "/home/agent/.aws/credentials",
				"AWS_ENDPOINT_URL":            "http://127.0.0.1:5000",
				"TF_TOKEN_app_terraform_io":   "registry-token",
				"HTTPS_PROXY":                 "http://proxy:3128",
				"no_proxy":                    ".internal",
				"SSL_CERT_FILE":               "/etc/ssl/certs/ca.pem",
				"GOMEMLIMIT":                  "1GiB",
				"KUBECONFIG":                  "/home/agent/.kube/config",
				"MYCORP_CA":                   "/etc/mycorp.pem",
				"MYCORP_REGION":               "us",
				"TF_CLI_CONFIG_FILE":          "/data/terraformrc",
				"CHECKPOINT_DISABLE":          "1",
			},
		},
		{
			name:    "job env cannot replace the runner's CLI config",
			spec:    EnvSpec{Job: map[string]string{"TF_CLI_CONFIG_FILE": "/tmp/evil"}},
			wantErr: "job environment sets TF_CLI_CONFIG_FILE",
		},
		{
			name:    "extra env cannot carry the agent's secrets",
			spec:    EnvSpec{Extra: map[string]string{"GRAPE_GIT_TOKEN": "x"}},
			wantErr: "extra environment sets GRAPE_GIT_TOKEN, which is never passed to terraform: it is one of the agent's own secrets",
		},
		{
			name:    "variables go in tfvars files, not the environment",
			spec:    EnvSpec{Job: map[string]string{"TF_VAR_db_password": "x"}},
			wantErr: "TF_VAR_db_password",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildEnv(tt.spec)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestValidateAllow(t *testing.T) {
	tests := []struct {
		entry   string
		wantErr string
	}{
		{"KUBECONFIG", ""},
		{"MYCORP_*", ""},
		{"G*", ""}, // covers GRAPE_* too, which BuildEnv still drops
		{"*", "want a variable name or a prefix"},
		{"A=B", "want a variable name or a prefix"},
		{"GRAPE_DATABASE_URL", "never passed to terraform"},
		{"DATABASE_URL", "never passed to terraform"},
		{"TF_VAR_x", "terraform-exec controls it"},
		{"TF_DATA_DIR", "share one .terraform directory"},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			err := validateAllow([]string{tt.entry})
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
