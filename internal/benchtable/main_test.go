package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAndTable(t *testing.T) {
	in := `goos: linux
pkg: github.com/grapehq/grape/reconciler
BenchmarkPickupLatency/notify-2         	       1	4189791614 ns/op	       200.0 deployments	         1.684 p50-ms	         2.802 p99-ms
BenchmarkClaimThroughput-2   	       1	2502398960 ns/op	      3410 claims/s
PASS
`
	rs, err := parse(strings.NewReader(in), io.Discard)
	require.NoError(t, err)
	require.Len(t, rs, 2)
	require.Equal(t, "PickupLatency/notify", rs[0].name)
	require.Equal(t, "reconciler", rs[0].pkg)
	require.Equal(t, "| package | benchmark | results |\n|---|---|---|\n"+
		"| reconciler | PickupLatency/notify | 4189791614 ns/op, 200.0 deployments, 1.684 p50-ms, 2.802 p99-ms |\n"+
		"| reconciler | ClaimThroughput | 2502398960 ns/op, 3410 claims/s |\n", table(rs))
}
