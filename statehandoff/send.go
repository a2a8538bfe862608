package statehandoff

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/localstate"
	"github.com/grapehq/grape/store"
)

// sendGrace is how long the sender waits for the receiver's verdict in the
// database after the connection failed, before failing the move itself.
const sendGrace = 10 * time.Second

// send hands the state this agent holds to the move's receiver, which
// listens. It keeps terraform's lock on the state from reading it until its
// copy is out of the live path (or the move failed), so no run of this agent
// changes a state while it moves.
func (s *Service) send(ctx context.Context, m store.StateMove) {
	log := s.o.Logger.With("move", m.ID, "config_id", m.ConfigID, "to", m.ToAgent)
	files, release, err := s.o.State.Export(m.ClusterID, m.ConfigID.String())
	if err != nil {
		why := fmt.Sprintf("agent %s cannot read the state to send: %v; nothing was moved", s.o.AgentID, err)
		if errors.Is(err, localstate.ErrLocked) {
			why = fmt.Sprintf("terraform holds the state's lock on agent %s (a deployment is running): nothing was moved; move it again when the deployment ended", s.o.AgentID)
		}
		s.fail(ctx, m, why)
		return
	}
	defer release()
	token, hash, err := newToken()
	if err != nil {
		s.fail(ctx, m, fmt.Sprintf("agent %s: %v; nothing was moved", s.o.AgentID, err))
		return
	}
	if err := s.o.Store.SendStateMove(ctx, m.ID, s.o.AgentID, hash); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.fail(ctx, m, fmt.Sprintf("refused by agent %s: %v; nothing was moved", s.o.AgentID, err))
		}
		return
	}
	cur, err := s.o.Store.GetStateMove(ctx, m.ID)
	if err != nil || cur.ReceiverAddr == nil || cur.ReceiverCertSHA256 == nil {
		s.fail(ctx, m, fmt.Sprintf("agent %s could not read where to send the state: %v; nothing was moved", s.o.AgentID, err))
		return
	}
	log.Info("sending the state", "addr", *cur.ReceiverAddr, "files", len(files))
	r, sendErr := deliver(ctx, *cur.ReceiverAddr, *cur.ReceiverCertSHA256, newOffer(m.ID, token, files))
	if sendErr == nil && !r.OK {
		sendErr = fmt.Errorf("agent %s refused it: %s", m.ToAgent, r.Error)
	}
	wait := ctx
	if sendErr != nil {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, sendGrace)
		defer cancel()
	}
	final, err := s.awaitFinal(wait, m.ID)
	if err == nil && !final.Status.Final() {
		reason := fmt.Sprintf("sending the state from agent %s to agent %s at %s failed: %v; nothing was moved", s.o.AgentID, m.ToAgent, *cur.ReceiverAddr, sendErr)
		if sendErr == nil {
			reason = fmt.Sprintf("agent %s answered but never recorded the move; nothing was moved", m.ToAgent)
		}
		s.fail(ctx, m, reason)
		final, err = s.awaitFinal(ctx, m.ID)
	}
	if err != nil || final.Status != store.MoveDone {
		log.Warn("the state stays here: the move did not complete", "err", err, "send_err", sendErr)
		return
	}
	kept, err := s.o.State.MoveAway(m.ClusterID, m.ConfigID.String(), time.Now().UTC().Format("20060102T150405Z")+"-moved-to-"+m.ToAgent)
	if err != nil {
		// The receiver holds the state; this copy is stale but harmless
		// while the claim gives the config to the receiver alone.
		log.Error("agent "+m.ToAgent+" holds the state now, but taking this agent's copy out of the live path failed: remove it by hand", "err", err)
		return
	}
	log.Info("moved the state: agent "+m.ToAgent+" holds it now; this agent's copy is kept out of the live path", "kept_at", kept)
}

// deliver dials the receiver, pinning its certificate, sends the offer and
// reads the answer. Dialling is retried briefly (the listener is up before
// it is published, but networks blink); a pin mismatch is not retried.
func deliver(ctx context.Context, addr, certSHA256 string, o offer) (reply, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: pinnedConfig(certSHA256)}
	b := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5})
	var conn net.Conn
	for {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		if err == nil {
			break
		}
		if errors.Is(err, errPin) || b.Attempt() >= 4 {
			return reply{}, fmt.Errorf("connecting to %s: %w", addr, err)
		}
		if werr := b.Wait(ctx); werr != nil {
			return reply{}, fmt.Errorf("connecting to %s: %w", addr, err)
		}
	}
	defer conn.Close()
	deadline := time.Now().Add(offerTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(o); err != nil {
		return reply{}, fmt.Errorf("sending the state to %s: %w", addr, err)
	}
	var r reply
	if err := json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&r); err != nil {
		return reply{}, fmt.Errorf("reading the answer of %s: %w", addr, err)
	}
	return r, nil
}
