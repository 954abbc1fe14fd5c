// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"

	"github.com/iorrc/rrc/replication"
)

func TestTransitionTopic(t *testing.T) {
	p, b := replication.RolePrimary, replication.RoleBackup
	tests := []struct {
		role     replication.Role
		from, to replication.State
		want     string
	}{
		{p, replication.StateStarting, replication.StateSyncing, "/rrc/replication/syncing"},
		{p, replication.StateSyncing, replication.StateInSync, "/rrc/replication/in-sync"},
		{p, replication.StateInSync, replication.StateDegraded, "/rrc/replication/degraded"},
		{p, replication.StateDegraded, replication.StateSyncing, TopicRepaired},
		{p, replication.StateInSync, replication.StateSyncing, "/rrc/replication/syncing"}, // a redial
		{p, replication.StateInSync, replication.StateSuperseded, "/rrc/replication/superseded"},
		{p, replication.StateInSync, replication.StateClosed, ""},
		{b, replication.StateInSync, replication.StatePrimaryLost, "/rrc/replication/primary-lost"},
		{b, replication.StateInSync, replication.StatePromoting, TopicFailoverStarted},
		{b, replication.StatePromoting, replication.StatePrimaryAfterFailover, TopicFailoverDone},
		{b, replication.StatePromoting, replication.StateFailed, TopicFailoverFailed},
		{b, replication.StateSyncing, replication.StateClosed, ""},
	}
	for _, tc := range tests {
		got := transitionTopic(replication.Transition{Role: tc.role, From: tc.from, To: tc.to})
		if got != tc.want {
			t.Errorf("%s %s → %s: topic %q, want %q", tc.role, tc.from, tc.to, got, tc.want)
		}
	}
}

type recordedEvent struct {
	topic  string
	id     string
	fields map[string]string
}

// eventRecorder stands in for the shim's connection to containerd.
type eventRecorder struct {
	mu   sync.Mutex
	got  []recordedEvent
	wait chan struct{} // if set, Publish blocks until it is closed
}

func (r *eventRecorder) Publish(_ context.Context, topic string, evt events.Event) error {
	if r.wait != nil {
		<-r.wait
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := evt.(*eventstypes.ContainerUpdate)
	r.got = append(r.got, recordedEvent{topic, u.ID, u.Labels})
	return nil
}

// TestReplicationEvents: transitions are published in order with their
// figures, the engine never waits for a stuck containerd (a full queue
// drops), and close publishes what is queued.
func TestReplicationEvents(t *testing.T) {
	rec := &eventRecorder{wait: make(chan struct{})}
	st := replication.Status{Failover: &replication.FailoverTimings{Epoch: 9, DetectionMS: 90, RestoreMS: 120, TotalMS: 300}}
	e := newReplicationEvents(context.Background(), rec, "c1", func() replication.Status { return st })
	at := time.Unix(1700000000, 0)
	tr := func(from, to replication.State) replication.Transition {
		return replication.Transition{Pair: "c1", Role: replication.RoleBackup, From: from, To: to, Reason: "r", At: at}
	}
	e.notify(tr(replication.StateInSync, replication.StatePromoting))
	e.notify(tr(replication.StatePromoting, replication.StatePrimaryAfterFailover))
	start := time.Now()
	for range eventQueue + 10 { // more than the queue holds while containerd is stuck
		e.notify(tr(replication.StateSyncing, replication.StateInSync))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("notify waited %s for a stuck containerd", d)
	}
	close(rec.wait)
	e.close()
	e.notify(tr(replication.StateInSync, replication.StateDisconnected)) // after close: ignored

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.got); n < 3 || n > eventQueue+1 {
		t.Fatalf("%d events published, want between 3 and %d (the queue, plus the one being published)", n, eventQueue+1)
	}
	if rec.got[0].topic != TopicFailoverStarted || rec.got[1].topic != TopicFailoverDone || rec.got[2].topic != "/rrc/replication/in-sync" {
		t.Errorf("topics %q, %q, %q", rec.got[0].topic, rec.got[1].topic, rec.got[2].topic)
	}
	done := rec.got[1].fields
	if rec.got[1].id != "c1" {
		t.Errorf("failover-done event of container %q", rec.got[1].id)
	}
	for k, want := range map[string]string{"pair": "c1", "role": "backup", "from": "promoting", "to": "primary-after-failover",
		"reason": "r", "epoch": "9", "detection_ms": "90.0", "restore_ms": "120.0", "total_ms": "300.0", "at": "2023-11-14T22:13:20Z"} {
		if done[k] != want {
			t.Errorf("failover-done field %s: %v, want %v", k, done[k], want)
		}
	}
	if _, ok := rec.got[0].fields["total_ms"]; ok {
		t.Errorf("failover-started carries figures: %v", rec.got[0].fields)
	}
	for _, ev := range rec.got {
		if ev.fields["to"] == string(replication.StateDisconnected) {
			t.Errorf("published after close: %v", ev)
		}
	}
}
