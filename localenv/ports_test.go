package localenv

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

func TestPortReservation(t *testing.T) {
	r, err := ReservePort()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Nobody listens yet: refused, like a free port.
	if _, err := net.Dial("tcp", r.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling a reserved port nobody listens on: want connection refused, got %v", err)
	}
	// The kernel never hands the reserved port to an automatic bind.
	for i := 0; i < 2000; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port == r.Port {
			t.Fatalf("an automatic bind was given the reserved port %d", port)
		}
	}
	// The server we reserved it for can listen, stop and listen again.
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", r.Addr())
		if err != nil {
			t.Fatalf("listening on the reserved port (round %d): %v", i, err)
		}
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatalf("dialling the server on the reserved port: %v", err)
		}
		c.Close()
		l.Close()
	}
	// A port someone listens on cannot be reserved.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if r2, err := reservePort(l.Addr().(*net.TCPAddr).Port); err == nil {
		r2.Close()
		t.Fatal("reserved a port a server listens on")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
