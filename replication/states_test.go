// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"testing"
	"time"
)

// TestStateTables: every state of each side is in its table, every
// successor is a known state, and the transitions the engine relies on are
// there while the ones that would break an invariant are not.
func TestStateTables(t *testing.T) {
	known := map[State]bool{StateStarting: true, StateSyncing: true, StateInSync: true, StateDegraded: true, StateFailing: true,
		StateSuperseded: true, StateDisconnected: true, StatePrimaryLost: true, StateFencing: true, StatePromoting: true, StatePrimaryAfterFailover: true,
		StateFailed: true, StateClosed: true}
	tables := map[Role]map[State][]State{RolePrimary: primaryTransitions(), RoleBackup: backupTransitions()}
	for role, table := range tables {
		for from, tos := range table {
			if !known[from] {
				t.Errorf("%s: unknown state %q", role, from)
			}
			for _, to := range tos {
				if _, ok := table[to]; !ok && to != StateClosed {
					t.Errorf("%s: %s → %s leads to a state without a row", role, from, to)
				}
			}
		}
	}
	tests := []struct {
		role     Role
		from, to State
		want     bool
		why      string
	}{
		{RolePrimary, StateStarting, StateSyncing, true, "Start"},
		{RolePrimary, StateSyncing, StateInSync, true, "first ack"},
		{RolePrimary, StateInSync, StateDegraded, true, "backup lost"},
		{RolePrimary, StateDegraded, StateSyncing, true, "re-paired"},
		{RolePrimary, StateInSync, StateSuperseded, true, "fenced by the backup"},
		{RolePrimary, StateSuperseded, StateDegraded, false, "a superseded copy never releases its output"},
		{RolePrimary, StateSuperseded, StateSyncing, false, "a superseded copy never re-pairs"},
		{RolePrimary, StateFailed, StateSuperseded, false, "failed is final but for close"},
		{RolePrimary, StateClosed, StateFailed, false, "closed is final"},
		{RolePrimary, StateStarting, StateInSync, false, "in sync only after an acknowledged checkpoint"},
		{RolePrimary, StateInSync, StateSyncing, true, "a lost connection dialled again at once"},
		{RolePrimary, StateSuperseded, StateSyncing, false, "a superseded copy never dials again"},
		{RolePrimary, StateInSync, StateFailing, true, "checkpoints keep failing"},
		{RolePrimary, StateSyncing, StateFailing, true, "the first checkpoints keep failing"},
		{RolePrimary, StateFailing, StateFailing, true, "the reason is updated with the count"},
		{RolePrimary, StateFailing, StateInSync, true, "a checkpoint was acknowledged"},
		{RolePrimary, StateFailing, StateDegraded, true, "backup lost while failing"},
		{RolePrimary, StateFailing, StateSyncing, true, "a lost connection dialled again at once: output still held"},
		{RolePrimary, StateDegraded, StateFailing, false, "a degraded primary's output flows: nothing is held to alarm about"},
		{RolePrimary, StateSuperseded, StateFailing, false, "a superseded copy stays superseded"},
		{RoleBackup, StateInSync, StatePromoting, true, "primary failed while in sync"},
		{RoleBackup, StateSyncing, StatePromoting, false, "never promote a checkpoint of an earlier connection"},
		{RoleBackup, StateDisconnected, StatePromoting, false, "a disconnected backup is not protected"},
		{RoleBackup, StatePromoting, StateClosed, false, "a promotion is never cut short"},
		{RoleBackup, StatePromoting, StatePrimaryAfterFailover, true, "restored"},
		{RoleBackup, StatePrimaryAfterFailover, StateClosed, false, "the restored container is the service"},
		{RoleBackup, StateDisconnected, StateSyncing, true, "the primary reconnected"},
		{RoleBackup, StateInSync, StatePrimaryLost, true, "connection ended without a goodbye"},
		{RoleBackup, StatePrimaryLost, StatePromoting, true, "silent for the detection bound after the connection ended"},
		{RoleBackup, StatePrimaryLost, StateSyncing, true, "the primary re-dialled within the bound"},
		{RoleBackup, StatePrimaryLost, StateClosed, true, "closed while waiting out the bound"},
		{RoleBackup, StateSyncing, StatePrimaryLost, false, "a backup not in sync has nothing consistent to wait for"},
		{RoleBackup, StateDisconnected, StatePrimaryLost, false, "a goodbye is final for that connection"},
		{RoleBackup, StatePrimaryLost, StateDisconnected, false, "a lost primary is a failure until it reconnects"},
		{RolePrimary, StateInSync, StatePrimaryLost, false, "only the backup waits for its primary"},
		{RoleBackup, StateInSync, StateFencing, true, "fenced: owning the pair before promoting"},
		{RoleBackup, StatePrimaryLost, StateFencing, true, "fenced: the bound passed after the connection ended"},
		{RoleBackup, StateFencing, StatePromoting, true, "owner of the pair"},
		{RoleBackup, StateFencing, StateSyncing, true, "the primary reconnected: it holds its lease"},
		{RoleBackup, StateFencing, StateDisconnected, true, "the primary had run degraded: stale checkpoint"},
		{RoleBackup, StateSyncing, StateFencing, false, "never fence for a checkpoint of an earlier connection"},
		{RoleBackup, StateDisconnected, StateFencing, false, "a disconnected backup is not protected"},
		{RolePrimary, StateDegraded, StateDegraded, true, "the witness did not record the degraded run: output held instead"},
	}
	for _, tc := range tests {
		m := newStateMachine(tables[tc.role], time.Now)
		m.state = tc.from
		before := m.since
		if got := m.to(tc.to, "r"); got != tc.want {
			t.Errorf("%s %s → %s: %v, want %v (%s)", tc.role, tc.from, tc.to, got, tc.want, tc.why)
			continue
		}
		if tc.want && (m.state != tc.to || m.reason != "r") {
			t.Errorf("%s %s → %s: state %s reason %q after the move", tc.role, tc.from, tc.to, m.state, m.reason)
		}
		if !tc.want && (m.state != tc.from || m.since != before) {
			t.Errorf("%s %s → %s refused but the state changed to %s", tc.role, tc.from, tc.to, m.state)
		}
	}
}

// TestStateMachineNotifiesAndTimes: every change of state, and only a
// change, is told in order; the time spent in each state adds up.
func TestStateMachineNotifiesAndTimes(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newStateMachine(primaryTransitions(), func() time.Time { return now })
	var got []Transition
	m.notify = transitionNotifier(func(tr Transition) { got = append(got, tr) }, "p1", RolePrimary)
	steps := []struct {
		to    State
		after time.Duration
	}{
		{StateSyncing, time.Second},
		{StateInSync, 2 * time.Second},
		{StateDegraded, 3 * time.Second},
		{StateDegraded, time.Second}, // not a successor of itself: refused, not told
		{StateSyncing, 4 * time.Second},
		{StateSyncing, time.Second}, // same state, new reason: not told
	}
	for _, s := range steps {
		now = now.Add(s.after)
		m.to(s.to, "why "+string(s.to))
	}
	want := []Transition{
		{"p1", RolePrimary, StateStarting, StateSyncing, "why syncing", time.Unix(1001, 0)},
		{"p1", RolePrimary, StateSyncing, StateInSync, "why in-sync", time.Unix(1003, 0)},
		{"p1", RolePrimary, StateInSync, StateDegraded, "why degraded", time.Unix(1006, 0)},
		{"p1", RolePrimary, StateDegraded, StateSyncing, "why syncing", time.Unix(1011, 0)},
	}
	if len(got) != len(want) {
		t.Fatalf("told %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("transition %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	now = now.Add(2 * time.Second)
	sec := m.seconds()
	for st, w := range map[State]float64{StateStarting: 1, StateSyncing: 2 + 1 + 2, StateInSync: 3, StateDegraded: 5} {
		if sec[st] != w {
			t.Errorf("seconds in %s: %v, want %v (all: %v)", st, sec[st], w, sec)
		}
	}
}
