package localenv

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
)

// PortReservation keeps a loopback TCP port ours from the moment we choose it
// until we let it go, including while the server on it is stopped and
// started again.
//
// Choosing a port by listening on :0 and closing the listener leaves a window
// in which the kernel can hand the same port to anyone else; with test
// packages running in parallel, that happens. A reservation is a socket
// bound to the port with SO_REUSEADDR that never listens: the kernel does not
// pick a bound port for anyone's :0 bind or outgoing connection, a server
// that also sets SO_REUSEADDR (PostgreSQL, git daemon --reuseaddr, Go and
// Python listeners) can still listen on it, and while no server listens a
// connection is refused, as it would be on a free port.
type PortReservation struct {
	Port int

	mu sync.Mutex
	fd int // -1 once closed
}

// ReservePort reserves a free loopback port chosen by the kernel.
func ReservePort() (*PortReservation, error) { return reserve(0, true) }

// ReserveClosedPort reserves a free loopback port that no server can take,
// for tests of an unreachable server: without SO_REUSEADDR on the
// reservation no listener can share it, so every connection is refused for
// as long as it is held.
func ReserveClosedPort() (*PortReservation, error) { return reserve(0, false) }

// reservePort reserves the given port (0: any free one) for a server. It
// fails if a server already listens there.
func reservePort(port int) (*PortReservation, error) { return reserve(port, true) }

func reserve(port int, shared bool) (*PortReservation, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserving a loopback port: socket: %w", err)
	}
	if shared {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			_ = syscall.Close(fd)
			return nil, fmt.Errorf("reserving a loopback port: SO_REUSEADDR: %w", err)
		}
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("reserving loopback port %d: %w", port, err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("reserving a loopback port: getsockname: %w", err)
	}
	return &PortReservation{Port: sa.(*syscall.SockaddrInet4).Port, fd: fd}, nil
}

// Addr is the reserved address, 127.0.0.1:port.
func (r *PortReservation) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))
}

// Close gives the port back. It is safe to call more than once and on nil.
func (r *PortReservation) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return nil
	}
	err := syscall.Close(r.fd)
	r.fd = -1
	return err
}
