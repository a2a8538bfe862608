package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server serves the agent's operational endpoints on one address.
type Server struct {
	hs   *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr (--metrics-listen) and serves h on it until Stop. Binding
// happens before Listen returns, so a port that is taken fails start-up with
// an error naming the address, not a log line nobody reads.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	s := &Server{
		hs: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics and health endpoints stopped serving", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address (the real port when addr asked for port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop ends the server, letting requests in flight finish while ctx allows.
// The agent stops it last, after its drain, so a scraper sees the drain.
func (s *Server) Stop(ctx context.Context) error {
	err := s.hs.Shutdown(ctx)
	if err != nil {
		_ = s.hs.Close()
	}
	<-s.done
	return err
}
