package notify

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// The channels and payloads below are sent by triggers of the schema
// (store/migrations/0001_control_plane.sql): grape_deployment_notify and
// grape_logs_notify. This file is the one place Go knows their names and
// formats; TestTriggersSendWhatTopicsParse keeps the two in step.
//
// Any role that can connect may NOTIFY any channel, so a payload is a hint
// to look at the database, never a fact to act on.

// Topic is a NOTIFY channel and how its payloads decode. Subscribe to one
// with Subscribe.
type Topic[T any] struct {
	channel string
	parse   func(payload string) (T, error)
	keep    func(T) bool // nil: every payload
}

// Channel is the PostgreSQL channel name.
func (t Topic[T]) Channel() string { return t.channel }

// Where narrows a topic to the payloads keep accepts; the rest are not
// delivered (and do not count against the subscriber's buffer).
func (t Topic[T]) Where(keep func(T) bool) Topic[T] {
	prev := t.keep
	t.keep = func(v T) bool { return (prev == nil || prev(v)) && keep(v) }
	return t
}

// ClusterEventKind says what happened to a deployment of the cluster.
type ClusterEventKind string

const (
	// Queued: a deployment became queued (inserted, or requeued by a rescue).
	Queued ClusterEventKind = "queued"
	// Cancel: a cancel was requested.
	Cancel ClusterEventKind = "cancel"
	// Approved: an approval was given.
	Approved ClusterEventKind = "approved"
)

// ClusterEvent is one notification on a cluster's channel.
type ClusterEvent struct {
	Kind         ClusterEventKind
	DeploymentID uuid.UUID
}

// Payload is the event as the trigger sends it: "<kind>:<deployment id>".
func (e ClusterEvent) Payload() string { return string(e.Kind) + ":" + e.DeploymentID.String() }

// ParseClusterEvent decodes a cluster channel payload.
func ParseClusterEvent(payload string) (ClusterEvent, error) {
	kind, rawID, ok := strings.Cut(payload, ":")
	if !ok {
		return ClusterEvent{}, fmt.Errorf("cluster event %q: want <kind>:<deployment id>", clip(payload))
	}
	switch k := ClusterEventKind(kind); k {
	case Queued, Cancel, Approved:
		id, err := uuid.Parse(rawID)
		if err != nil {
			return ClusterEvent{}, fmt.Errorf("cluster event %q: deployment id: %w", clip(payload), err)
		}
		return ClusterEvent{Kind: k, DeploymentID: id}, nil
	default:
		return ClusterEvent{}, fmt.Errorf("cluster event %q: unknown kind %q", clip(payload), clip(kind))
	}
}

// clusterChannelPrefix + cluster id is a cluster's channel. Cluster ids are
// at most 40 characters of [a-z0-9-] (clusters_id_format), so the name stays
// under PostgreSQL's 63-byte limit for channel names.
const clusterChannelPrefix = "grape_cluster_"

// ClusterEvents is the channel of a cluster's agents: queued, cancel and
// approved events of its deployments.
func ClusterEvents(clusterID string) Topic[ClusterEvent] {
	return Topic[ClusterEvent]{channel: clusterChannelPrefix + clusterID, parse: ParseClusterEvent}
}

// LogBatch is one notification on grape_logs: a batch of lines of a
// deployment was stored, the last with seq LastSeq.
type LogBatch struct {
	DeploymentID uuid.UUID
	LastSeq      int64
}

// Payload is the batch as the trigger sends it: "<deployment id>:<last seq>".
func (b LogBatch) Payload() string {
	return b.DeploymentID.String() + ":" + strconv.FormatInt(b.LastSeq, 10)
}

// ParseLogBatch decodes a grape_logs payload.
func ParseLogBatch(payload string) (LogBatch, error) {
	rawID, rawSeq, ok := strings.Cut(payload, ":")
	if !ok {
		return LogBatch{}, fmt.Errorf("log batch %q: want <deployment id>:<last seq>", clip(payload))
	}
	id, err := uuid.Parse(rawID)
	if err != nil {
		return LogBatch{}, fmt.Errorf("log batch %q: deployment id: %w", clip(payload), err)
	}
	seq, err := strconv.ParseInt(rawSeq, 10, 64)
	if err != nil || seq < 1 {
		return LogBatch{}, fmt.Errorf("log batch %q: last seq is not a positive integer", clip(payload))
	}
	return LogBatch{DeploymentID: id, LastSeq: seq}, nil
}

// LogsChannel is where every stored batch of log lines is announced.
const LogsChannel = "grape_logs"

// Logs is every deployment's log batches.
var Logs = Topic[LogBatch]{channel: LogsChannel, parse: ParseLogBatch}

// LogsOf is the log batches of one deployment.
func LogsOf(deploymentID uuid.UUID) Topic[LogBatch] {
	return Logs.Where(func(b LogBatch) bool { return b.DeploymentID == deploymentID })
}

// clip shortens a payload for an error message: anyone may NOTIFY up to
// 8000 bytes, and a log line needs only enough to recognise it.
func clip(s string) string {
	const limit = 100
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

// StateMoveEvent is one notification on a cluster's state-move channel
// (trigger grape_state_move_notify, migration state_move): a move was requested or
// changed status.
type StateMoveEvent struct {
	Status string
	MoveID uuid.UUID
}

// ParseStateMoveEvent decodes "<status>:<move id>".
func ParseStateMoveEvent(payload string) (StateMoveEvent, error) {
	status, rawID, ok := strings.Cut(payload, ":")
	if !ok || status == "" {
		return StateMoveEvent{}, fmt.Errorf("state move event %q: want <status>:<move id>", clip(payload))
	}
	id, err := uuid.Parse(rawID)
	if err != nil {
		return StateMoveEvent{}, fmt.Errorf("state move event %q: move id: %w", clip(payload), err)
	}
	return StateMoveEvent{Status: status, MoveID: id}, nil
}

// stateMoveChannelPrefix + cluster id stays under 63 bytes (ids are ≤ 40).
const stateMoveChannelPrefix = "grape_moves_"

// StateMoves is the channel of a cluster's state moves.
func StateMoves(clusterID string) Topic[StateMoveEvent] {
	return Topic[StateMoveEvent]{channel: stateMoveChannelPrefix + clusterID, parse: ParseStateMoveEvent}
}
