package statehandoff

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grapehq/grape/store"
)

// offerTimeout bounds one connection: handshake, offer, and the answer.
const offerTimeout = 2 * time.Minute

// helloTimeout bounds the handshake and the offer of one connection.
const helloTimeout = time.Minute

// receive opens the move's one-time listener, publishes it, and takes the
// state from the first connection that presents the move's token. Other
// connections are answered with an error and do not end the listener.
func (s *Service) receive(ctx context.Context, m store.StateMove) {
	log := s.o.Logger.With("move", m.ID, "config_id", m.ConfigID, "from", m.FromAgent)
	deadline, _ := ctx.Deadline()
	cert, fp, err := ephemeralCert("grape state handoff "+m.ID.String(), time.Now(), time.Until(deadline)+time.Minute)
	if err != nil {
		s.fail(ctx, m, fmt.Sprintf("agent %s: %v; nothing was moved", s.o.AgentID, err))
		return
	}
	var lc net.ListenConfig
	raw, err := lc.Listen(ctx, "tcp", s.o.Addr)
	if err != nil {
		s.fail(ctx, m, fmt.Sprintf("agent %s cannot listen on its --state-handoff-addr %s: %v; nothing was moved", s.o.AgentID, s.o.Addr, err))
		return
	}
	ln := tls.NewListener(raw, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	addr := publishedAddr(s.o.Addr, raw.Addr())
	if err := s.o.Store.ListenStateMove(ctx, m.ID, s.o.AgentID, addr, fp); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.fail(ctx, m, fmt.Sprintf("agent %s could not publish its listener: %v; nothing was moved", s.o.AgentID, err))
		}
		return
	}
	log.Info("listening for a moved state", "addr", addr, "cert_sha256", fp)
	// Connections are served at once, each in its own goroutine, so one
	// that idles (a port scan, a stray client) never holds the sender out;
	// the first with the move's token takes the move (taken), and the
	// listener closes once that ended the move.
	var (
		wg    sync.WaitGroup
		taken atomic.Bool
		ended atomic.Bool
	)
	defer wg.Wait()
	// Once the move ended, connections still open (idle ones) are closed.
	conns, closeConns := context.WithCancel(ctx)
	defer closeConns()
	for {
		conn, err := ln.Accept()
		if err != nil {
			// Closed because the move ended, or its deadline passed (the
			// expiry sweep then fails it with what it waited for).
			if !ended.Load() && ctx.Err() == nil {
				s.fail(ctx, m, fmt.Sprintf("agent %s: accepting on %s: %v; nothing was moved", s.o.AgentID, addr, err))
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop := context.AfterFunc(conns, func() { conn.Close() })
			defer stop()
			if s.handle(ctx, m, conn, &taken) {
				ended.Store(true)
				ln.Close()
			}
		}()
	}
}

// publishedAddr is the listener's address as the sender should dial it: the
// host the operator gave, with the port actually bound (for port 0).
func publishedAddr(flag string, bound net.Addr) string {
	host, _, _ := net.SplitHostPort(flag)
	_, port, _ := net.SplitHostPort(bound.String())
	return net.JoinHostPort(host, port)
}

// handle serves one connection. It reports whether the move ended (done or
// failed); a connection without the move's token does not end it.
func (s *Service) handle(ctx context.Context, m store.StateMove, conn net.Conn, taken *atomic.Bool) bool {
	defer conn.Close()
	log := s.o.Logger.With("move", m.ID, "config_id", m.ConfigID, "remote", conn.RemoteAddr().String())
	deadline := func(d time.Duration) time.Time {
		t := time.Now().Add(d)
		if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
			return dl
		}
		return t
	}
	_ = conn.SetDeadline(deadline(helloTimeout))
	answer := func(r reply) {
		if err := json.NewEncoder(conn).Encode(r); err != nil {
			log.Warn("answering the sender failed", "err", err)
		}
	}
	o, err := readOffer(conn)
	if err != nil {
		log.Warn("ignoring a connection to the handoff listener", "err", err)
		return false
	}
	cur, err := s.o.Store.GetStateMove(ctx, m.ID)
	if err != nil {
		log.Warn("reading the state move failed", "err", err)
		answer(reply{Error: "the receiver could not read the move: try again"})
		return false
	}
	if o.Move != m.ID || cur.Status != store.MoveSending || cur.TokenSHA256 == nil || !tokenMatches(o.Token, *cur.TokenSHA256) {
		log.Warn("refused an offer without this move's one-time token")
		answer(reply{Error: "not the sender this move waits for"})
		return false
	}
	if !taken.CompareAndSwap(false, true) {
		answer(reply{Error: "this move's offer is being received on another connection"})
		return false
	}
	// From here on the offer is the move's: it ends, one way or the other.
	_ = conn.SetDeadline(deadline(offerTimeout))
	if err := o.verify(); err != nil {
		msg := fmt.Sprintf("the state arrived at agent %s unusable: %v; nothing was moved", s.o.AgentID, err)
		s.fail(ctx, m, msg)
		answer(reply{Error: msg})
		return true
	}
	if err := s.o.State.Import(m.ClusterID, m.ConfigID.String(), o.Files, time.Now()); err != nil {
		msg := fmt.Sprintf("agent %s could not store the state: %v; nothing was moved", s.o.AgentID, err)
		s.fail(ctx, m, msg)
		answer(reply{Error: msg})
		return true
	}
	if err := s.o.Store.CompleteStateMove(ctx, m.ID, s.o.AgentID, o.stateSHA256(), len(o.Files)); err != nil {
		// The commit may have landed although its answer was lost: the
		// row decides whether this agent now holds the state.
		final, rerr := s.awaitFinal(ctx, m.ID)
		if rerr != nil || final.Status != store.MoveDone {
			aside, merr := s.o.State.MoveAway(m.ClusterID, m.ConfigID.String(), time.Now().UTC().Format("20060102T150405Z")+"-move-"+m.ID.String()+"-not-completed")
			msg := fmt.Sprintf("agent %s could not become the holder: %v; nothing was moved (the copy it received is kept at %s)", s.o.AgentID, err, aside)
			if merr != nil {
				msg = fmt.Sprintf("agent %s could not become the holder: %v; and taking the received copy out of its live path failed: %v", s.o.AgentID, err, merr)
			}
			s.fail(ctx, m, msg)
			answer(reply{Error: msg})
			return true
		}
	}
	log.Info("received a moved state: this agent holds it now", "state_sha256", o.stateSHA256(), "files", len(o.Files),
		"path", s.o.State.Path(m.ClusterID, m.ConfigID.String()))
	answer(reply{OK: true, StateSHA256: o.stateSHA256()})
	return true
}
