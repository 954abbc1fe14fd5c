// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"strconv"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/log"

	"github.com/iorrc/rrc/replication"
)

// Topics of the replication events a shim publishes on containerd's event
// bus (`ctr events`); docs/OPERATIONS.md lists them with their fields. The
// event is a ContainerUpdate whose labels carry the fields: ctr and every
// containerd client can decode it (ctr knows no generic map type, such as
// protobuf's Struct), and containerd's own subscribers filter by topic.
const (
	TopicFailoverStarted = "/rrc/failover/started"
	TopicFailoverDone    = "/rrc/failover/done"
	TopicFailoverFailed  = "/rrc/failover/failed"
	TopicRepaired        = "/rrc/replication/repaired"
	// TopicStatePrefix + the new state, for every other change of state
	// (in-sync, degraded, failing, superseded, disconnected, ...).
	TopicStatePrefix = "/rrc/replication/"
)

// transitionTopic is the topic of a change of state; "" for the changes
// nobody watches (starting, closing).
func transitionTopic(t replication.Transition) string {
	switch {
	case t.To == replication.StateClosed || t.To == replication.StateStarting:
		return ""
	case t.To == replication.StatePromoting:
		return TopicFailoverStarted
	case t.To == replication.StatePrimaryAfterFailover:
		return TopicFailoverDone
	case t.Role == replication.RoleBackup && t.From == replication.StatePromoting:
		return TopicFailoverFailed
	case t.Role == replication.RolePrimary && t.From == replication.StateDegraded && t.To == replication.StateSyncing:
		return TopicRepaired
	}
	return TopicStatePrefix + string(t.To)
}

// eventQueue bounds the transitions waiting to be published: the engine
// must never wait for containerd.
const eventQueue = 64

// replicationEvents publishes one replica's changes of state, in order, off
// the engine's lock (notify only queues).
type replicationEvents struct {
	ctx       context.Context // namespace and the container's logger
	publisher events.Publisher
	id        string
	// status gives the failover's figures for TopicFailoverDone.
	status func() replication.Status

	mu     sync.Mutex
	queue  chan replication.Transition
	closed bool
	done   chan struct{}
}

func newReplicationEvents(ctx context.Context, publisher events.Publisher, id string, status func() replication.Status) *replicationEvents {
	e := &replicationEvents{ctx: ctx, publisher: publisher, id: id, status: status,
		queue: make(chan replication.Transition, eventQueue), done: make(chan struct{})}
	go e.run()
	return e
}

// notify is the engine's OnTransition: it queues, or drops (and says so)
// when containerd has not taken the last eventQueue events.
func (e *replicationEvents) notify(t replication.Transition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	select {
	case e.queue <- t:
	default:
		log.G(e.ctx).WithField("state", t.To).Warn("replication event dropped: containerd is not taking events")
	}
}

func (e *replicationEvents) run() {
	defer close(e.done)
	for t := range e.queue {
		topic := transitionTopic(t)
		if topic == "" {
			continue
		}
		evt := &eventstypes.ContainerUpdate{ID: e.id, Labels: e.fields(t, topic)}
		if err := e.publisher.Publish(e.ctx, topic, evt); err != nil {
			log.G(e.ctx).WithError(err).WithField("topic", topic).Warn("publishing replication event")
		}
	}
}

// fields are the event's content: what changed, and for a failover its
// figures as the status reports them.
func (e *replicationEvents) fields(t replication.Transition, topic string) map[string]string {
	f := map[string]string{
		"pair": t.Pair, "role": string(t.Role),
		"from": string(t.From), "to": string(t.To), "at": t.At.UTC().Format(time.RFC3339Nano),
	}
	if t.Reason != "" {
		f["reason"] = t.Reason
	}
	if topic != TopicFailoverDone || e.status == nil {
		return f
	}
	st := e.status()
	if fo := st.Failover; fo != nil {
		msec := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
		f["epoch"] = strconv.FormatUint(fo.Epoch, 10)
		f["detection_ms"], f["stop_ms"], f["prepare_ms"] = msec(fo.DetectionMS), msec(fo.StopMS), msec(fo.PrepareMS)
		f["restore_ms"], f["network_ms"], f["total_ms"] = msec(fo.RestoreMS), msec(fo.NetworkMS), msec(fo.TotalMS)
		f["verify_ms"] = msec(fo.VerifyMS)
		if fo.Replay != nil {
			f["replay_ms"] = msec(fo.ReplayMS)
		}
	}
	return f
}

// close stops taking transitions and waits (a bounded time) until those
// queued are published.
func (e *replicationEvents) close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.mu.Unlock()
	select {
	case <-e.done:
	case <-time.After(2 * time.Second):
		log.G(e.ctx).Warn("replication events still being published at close; left behind")
	}
}
