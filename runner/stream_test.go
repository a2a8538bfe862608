package runner

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// replay feeds a recorded -json stream through the renderer in uneven
// chunks, as pipe reads arrive, and returns what Job.Stdout received.
func replay(t *testing.T, name string) (string, *jsonStream) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "ui", name))
	require.NoError(t, err)
	var out bytes.Buffer
	s := newSink(Job{Stdout: &out})
	js := s.jsonStream()
	for len(data) > 0 {
		n := min(len(data), 97)
		_, err := js.Write(data[:n])
		require.NoError(t, err)
		data = data[n:]
	}
	js.Flush()
	return out.String(), js
}

func TestRenderUIStream(t *testing.T) {
	for _, name := range []string{"plan.jsonl", "apply.jsonl", "precondition.jsonl", "init_badhcl.jsonl", "state_lock.jsonl", "apply_interrupted.jsonl"} {
		t.Run(name, func(t *testing.T) {
			got, _ := replay(t, name)
			golden(t, filepath.Join("ui", strings.TrimSuffix(name, ".jsonl")+".golden"), []byte(got))
			// Every rendered line is text, never a raw JSON message.
			sc := bufio.NewScanner(strings.NewReader(got))
			for sc.Scan() {
				assert.False(t, strings.HasPrefix(sc.Text(), `{"@level"`), "raw JSON leaked into the log: %s", sc.Text())
			}
		})
	}
}

func TestRenderKeepsNonJSONLines(t *testing.T) {
	var out bytes.Buffer
	js := newSink(Job{Stdout: &out}).jsonStream()
	_, _ = js.Write([]byte("panic: something broke\n{\"not\":\"a ui message\"}\n{\"@message\":\"Plan: 1 to add\",\"type\":\"change_summary\"}\npartial"))
	js.Flush()
	assert.Equal(t, "panic: something broke\n{\"not\":\"a ui message\"}\nPlan: 1 to add\npartial\n", out.String())
}

func TestStreamCollectsDiagnosticsAndApplyCompletion(t *testing.T) {
	_, js := replay(t, "apply.jsonl")
	assert.True(t, js.applied)
	assert.Empty(t, js.diags)

	_, js = replay(t, "apply_interrupted.jsonl")
	assert.False(t, js.applied)
	require.Len(t, js.diags, 3)
	assert.Equal(t, tfjson.DiagnosticSeverityError, js.diags[0].Severity)
	assert.Equal(t, "local-exec provisioner error", js.diags[0].Summary)
	assert.Equal(t, "terraform_data.slow", js.diags[0].Address)
}
