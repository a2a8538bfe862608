package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevAWSRefusals covers the choices grape dev refuses without starting
// anything: with moto_server off PATH, auto never falls back to real AWS.
func TestDevAWSRefusals(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no moto_server
	creds := map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
	for _, tc := range []struct {
		name, mode string
		env        map[string]string
		want       string
	}{
		{"auto without moto, with credentials", "auto", creds, "moto_server is not installed and AWS credentials are set: pass --aws real"},
		{"auto without moto or credentials", "auto", nil, "no AWS to talk to"},
		{"moto without moto", "moto", nil, "--aws moto: moto_server is not on PATH"},
		{"real without credentials", "real", nil, "--aws real: no AWS credentials"},
		{"unknown mode", "mocked", nil, `--aws: want moto, real or auto, got "mocked"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cio := &cmdIO{stdout: &out, stderr: &out, getenv: func(k string) string { return tc.env[k] }}
			env, stop, err := devAWS(context.Background(), cio, tc.mode, t.TempDir())
			var ue usageError
			require.ErrorAs(t, err, &ue)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, env)
			require.NotNil(t, stop)
			require.Empty(t, out.String(), "nothing announced for a refused choice")
		})
	}
}
