package runner

import (
	"os/exec"
	"strings"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/errkind"
)

func TestClassify(t *testing.T) {
	exitErr := exitError(t, 1)
	tests := []struct {
		name     string
		phase    string
		stream   string // recorded UI output, or "" for none
		wantKind errkind.Kind
		wantMsg  string
	}{
		{
			name: "state lock held", phase: "plan", stream: "state_lock.jsonl",
			wantKind: errkind.StateLock,
			wantMsg:  "the state is locked by root@vm (OperationTypeApply since 2026-11-27 07:56:51.575270073 +0000 UTC, lock ID be986b70-4f33-7e9f-167f-285c6280a97a); wait for that run to finish or force-unlock it",
		},
		{
			// No lock info: the lock could not be reached, nobody holds it.
			name: "state lock unreachable", phase: "plan", stream: "lock_unreachable.jsonl",
			wantKind: errkind.Plan,
			wantMsg:  "terraform plan could not acquire the state lock: Error message: operation error DynamoDB: PutItem, exceeded maximum number of attempts, 5, https response error StatusCode: 0, RequestID: , request send failed, Post \"http://127.0.0.1:46001/\": dial tcp 127.0.0.1:46001: connect: connection refused Unable to retrieve item from DynamoDB table \"locks\": operation error DynamoDB: GetItem, exceeded maximum number of attempts, 5, https response error StatusCode: 0, RequestID: , request send failed, Post \"http://127.0.0.1:46001/\": dial tcp 127.0.0.1:46001: connect: connection refused",
		},
		{
			// The plan ran, but the backend went away before the unlock.
			name: "state lock not released", phase: "plan", stream: "lock_release.jsonl",
			wantKind: errkind.Plan,
			wantMsg:  "terraform plan could not release the state lock: Error message: unable to retrieve file from S3 bucket 'state-exp' with key 'x/t.tfstate.tflock': operation error S3: GetObject, exceeded maximum number of attempts, 5, https response error StatusCode: 0, RequestID: , HostID: , request send failed, Get \"http://127.0.0.1:46000/state-exp/x/t.tfstate.tflock?x-id=GetObject\": dial tcp 127.0.0.1:46000: connect: connection refused",
		},
		{
			name: "failing precondition", phase: "plan", stream: "precondition.jsonl",
			wantKind: errkind.Plan,
			wantMsg:  "terraform plan failed: Resource precondition failed: The ok variable must be true",
		},
		{
			name: "syntax error at init", phase: "init", stream: "init_badhcl.jsonl",
			wantKind: errkind.Init,
			wantMsg:  "terraform init failed: Unclosed configuration block: There is no closing brace for this block before the end of the file (and 1 more error in the log)",
		},
		{
			name: "provisioner failure names the resource", phase: "apply", stream: "apply_interrupted.jsonl",
			wantKind: errkind.Apply,
			wantMsg:  "terraform apply failed: local-exec provisioner error (terraform_data.slow): Error running command 'sleep 30; echo done': signal: killed",
		},
		{
			name: "no diagnostics at all", phase: "apply",
			wantKind: errkind.Apply,
			wantMsg:  "terraform apply failed (exit status 1) without a machine-readable error; see the log",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var diags []tfjson.Diagnostic
			if tt.stream != "" {
				_, js := replay(t, tt.stream)
				diags = js.diags
			}
			e := classify(tt.phase, diags, exitErr)
			assert.Equal(t, tt.wantKind, e.Kind)
			assert.Equal(t, tt.phase, e.Phase)
			assert.Equal(t, tt.wantMsg, e.Msg)
			assert.Equal(t, strings.Contains(tt.wantMsg, LockNotReleased), e.LockLeft)
			assert.NotContains(t, e.Msg, "\n")
			assert.ErrorIs(t, e, exitErr)
		})
	}
}

func TestParseLockInfo(t *testing.T) {
	_, js := replay(t, "state_lock.jsonl")
	require.Len(t, js.diags, 1)
	li := parseLockInfo(js.diags[0].Detail)
	require.NotNil(t, li)
	assert.Equal(t, LockInfo{
		ID:        "be986b70-4f33-7e9f-167f-285c6280a97a",
		Path:      "terraform.tfstate",
		Operation: "OperationTypeApply",
		Who:       "root@vm",
		Version:   "1.11.4",
		Created:   "2026-11-27 07:56:51.575270073 +0000 UTC",
	}, *li)

	// An S3 lock's detail has the same block with other values.
	s3 := "Error message: operation error S3: PutObject, ConditionalRequestFailed\nLock Info:\n  ID:        3a2f\n  Path:      bucket/env/terraform.tfstate\n  Operation: OperationTypePlan\n  Who:       ci@runner-7\n  Version:   1.11.4\n  Created:   2026-01-02 03:04:05 +0000 UTC\n  Info:      grape deployment 42\n\n\nTerraform acquires a state lock..."
	li = parseLockInfo(s3)
	require.NotNil(t, li)
	assert.Equal(t, "ci@runner-7", li.Who)
	assert.Equal(t, "bucket/env/terraform.tfstate", li.Path)
	assert.Equal(t, "grape deployment 42", li.Info)

	assert.Nil(t, parseLockInfo("Error message: something else entirely"))
}

func TestErrorMatchesCauses(t *testing.T) {
	e := &Error{Kind: errkind.Cancelled, Phase: "apply", Msg: "cancelled in apply: cancel requested", Err: errkind.ErrCancelRequested}
	var err error = e
	require.ErrorIs(t, err, errkind.ErrCancelRequested)
	require.NotErrorIs(t, err, errkind.ErrShutdown)
	assert.Equal(t, "cancelled in apply: cancel requested", err.Error())
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", maxMsgPart+60)
	got := oneLine(long)
	assert.Len(t, []rune(got), maxMsgPart)
	assert.True(t, strings.HasSuffix(got, "…"))

	// A long provider error keeps its whole sentence.
	aws := "creating EC2 Subnet: operation error EC2: CreateSubnet, https response error StatusCode: 400, RequestID: 5a8e6f1c-3b2d-4e7a-9f10-2c4d6e8f0a1b, api error InvalidParameterValue: Value (eu-west-1z) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: eu-west-1a, eu-west-1b, eu-west-1c."
	assert.Equal(t, aws, oneLine(aws))
	// A cut ends at a word boundary.
	words := strings.Repeat("availability ", maxMsgPart/10)
	got = oneLine(words)
	assert.True(t, strings.HasSuffix(got, "availability…"), got[len(got)-30:])
	assert.LessOrEqual(t, len([]rune(got)), maxMsgPart)
	assert.Equal(t, "a b c", oneLine("a\n b\t c "))
}

// exitError returns a real *exec.ExitError with the given status.
func exitError(t *testing.T, code int) error {
	t.Helper()
	err := exec.Command("sh", "-c", "exit "+string(rune('0'+code))).Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	return err
}
