package testsupport

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy on a fixed loopback address in front of a real
// server (a git server, moto), for fault tests that need the server to go
// away and come back at the same address. Down closes the listening socket
// and every open connection, so a client sees exactly what it sees when the
// server process dies (resets, then "connection refused"), while the server
// behind it keeps its state — moto keeps its buckets only in memory, so
// stopping moto itself would lose them.
type FaultProxy struct {
	// Addr is the proxy's 127.0.0.1:port; it stays the same across Down/Up.
	Addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener // nil while down
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	t     testing.TB
}

// StartFaultProxy proxies a free loopback port to target (host:port) until
// the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	// The port stays ours while the proxy is down, or a parallel test's
	// server could be handed it and answer in the real server's place.
	port := ReservePort(t)
	ln, err := net.Listen("tcp", port.Addr())
	if err != nil {
		t.Fatalf("fault proxy: listening: %v", err)
	}
	p := &FaultProxy{Addr: port.Addr(), target: target, conns: map[net.Conn]struct{}{}, t: t}
	p.serve(ln)
	t.Cleanup(func() {
		p.Down()
		p.wg.Wait()
	})
	return p
}

// URL returns rawURL with its host replaced by the proxy's address (user
// info, path and query are kept).
func (p *FaultProxy) URL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		p.t.Fatalf("fault proxy: parsing %q: %v", rawURL, err)
	}
	u.Host = p.Addr
	return u.String()
}

// Down stops accepting connections and cuts every open one. It is a no-op
// when the proxy is already down.
func (p *FaultProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	_ = p.ln.Close()
	p.ln = nil
	for c := range p.conns {
		// RST rather than FIN, like a server that died mid-conversation.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	clear(p.conns)
}

// Up listens again on the same address. A socket in TIME_WAIT can hold the
// port for a moment, so binding is retried for a few seconds.
func (p *FaultProxy) Up() {
	p.t.Helper()
	p.mu.Lock()
	up := p.ln != nil
	p.mu.Unlock()
	if up {
		return
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ln, err = net.Listen("tcp", p.Addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("fault proxy: listening again on %s: %v", p.Addr, err)
	}
	p.serve(ln)
}

func (p *FaultProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Down
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.pipe(ln, c) }()
		}
	}()
}

// pipe connects one client to the target, unless the proxy went down (or
// was brought up again on a new listener) in between.
func (p *FaultProxy) pipe(ln net.Listener, client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.ln != ln {
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[client] = struct{}{}
	p.conns[server] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		if _, err := io.Copy(dst, src); err != nil {
			// A reset on one side resets the other.
			_ = client.Close()
			_ = server.Close()
			return
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // pass the EOF on; the other direction may go on
		}
	}
	go cp(server, client)
	go cp(client, server)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
	_ = client.Close()
	_ = server.Close()
}
