package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Channel is the NOTIFY channel of a cluster's agents (see the
// grape_deployment_notify trigger).
func Channel(clusterID string) string { return "grape_cluster_" + clusterID }

// event is one notification for this cluster.
type event struct {
	kind string // queued, cancel, approved
	id   uuid.UUID
}

// listener holds one dedicated connection in LISTEN. Notifications only wake
// the claim loop; polling stays the source of truth, so a notification lost
// while reconnecting costs at most one poll interval.
type listener struct {
	connString string
	channel    string
	log        *slog.Logger
	events     chan<- event
	reconnect  func()       // called after every (re)connect: the loop re-scans
	alive      *atomic.Bool // read by /readyz
}

func (l *listener) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listenOnce(ctx)
		l.alive.Store(false)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("LISTEN connection lost; polling until it is back", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (l *listener) listenOnce(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(l.connString)
	if err != nil {
		return fmt.Errorf("parsing database URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "grape-listener"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return fmt.Errorf("LISTEN %s: %w", l.channel, err)
	}
	l.alive.Store(true)
	l.reconnect()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for notification: %w", err)
		}
		kind, rawID, _ := strings.Cut(n.Payload, ":")
		id, err := uuid.Parse(rawID)
		if err != nil {
			l.log.Warn("ignoring malformed notification", "payload", n.Payload)
			continue
		}
		select {
		case l.events <- event{kind: kind, id: id}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
