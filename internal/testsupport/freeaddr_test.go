package testsupport_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/grapehq/grape/internal/testsupport"
)

// A "server down" address must refuse connections for the whole test, even
// while parallel tests open listeners on ports the kernel hands out.
func TestFreeLoopbackAddrRefusesAndStaysReserved(t *testing.T) {
	for i := 0; i < 50; i++ {
		addr := testsupport.FreeLoopbackAddr(t)
		if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dialling %s: want connection refused, got %v", addr, err)
		}
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			t.Fatalf("a listener could bind the reserved address %s", addr)
		}
	}
}
