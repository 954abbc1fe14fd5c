// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"slices"
	"time"
)

// The two state machines, each one table: the states a side may move to
// from each state. Every change of state goes through stateMachine.to, so
// a transition the table does not list cannot happen (the caller's guard
// is the table). A state listed as its own successor may be entered again
// (to update the reason).

// primaryTransitions is the primary's state machine.
//
//	starting → syncing → in-sync → degraded → syncing (re-paired) …
//	starting → degraded (a container serving unprotected, e.g. restored at a
//	  failover, pairing with a new backup: StartUnprotected)
//	syncing, in-sync → syncing (a lost connection dialled again at once)
//	syncing, in-sync → failing (checkpoints keep failing; output held) → in-sync (one acknowledged)
//	degraded → degraded (the witness did not record it: output held instead)
//	any live state → superseded (the backup took over) | failed | closed
func primaryTransitions() map[State][]State {
	return map[State][]State{
		StateStarting:   {StateSyncing, StateDegraded, StateSuperseded, StateFailed, StateClosed},
		StateSyncing:    {StateSyncing, StateInSync, StateFailing, StateDegraded, StateSuperseded, StateFailed, StateClosed},
		StateInSync:     {StateSyncing, StateFailing, StateDegraded, StateSuperseded, StateFailed, StateClosed},
		StateFailing:    {StateFailing, StateSyncing, StateInSync, StateDegraded, StateSuperseded, StateFailed, StateClosed},
		StateDegraded:   {StateDegraded, StateSyncing, StateSuperseded, StateFailed, StateClosed},
		StateSuperseded: {StateSuperseded, StateFailed, StateClosed},
		StateFailed:     {StateFailed, StateClosed},
		StateClosed:     nil,
	}
}

// backupTransitions is the backup's state machine.
//
//	starting → syncing → in-sync → promoting → primary-after-failover | failed
//	in-sync → primary-lost (connection ended, no goodbye) → promoting (silent
//	  for the detection bound) | syncing (the primary reconnected in time)
//	syncing, in-sync → disconnected → syncing (the primary reconnected)
//	fenced (a witness): in-sync, primary-lost → fencing (owning the pair
//	  first) → promoting | syncing (the primary reconnected) |
//	  disconnected (the primary had run degraded: the checkpoint is stale)
//	waiting states → closed; a promotion is never cut short
func backupTransitions() map[State][]State {
	return map[State][]State{
		StateStarting:             {StateSyncing, StateClosed},
		StateSyncing:              {StateInSync, StateDisconnected, StateClosed},
		StateInSync:               {StateSyncing, StateDisconnected, StatePrimaryLost, StatePromoting, StateFencing, StateClosed},
		StatePrimaryLost:          {StateSyncing, StatePromoting, StateFencing, StateClosed},
		StateFencing:              {StateSyncing, StatePromoting, StateDisconnected, StateClosed},
		StateDisconnected:         {StateSyncing, StateClosed},
		StatePromoting:            {StatePrimaryAfterFailover, StateFailed},
		StatePrimaryAfterFailover: nil,
		StateFailed:               nil,
	}
}

// States lists the states of role's side, in the order of its table's
// keys sorted by name (for a state set in metrics).
func States(role Role) []State {
	table := primaryTransitions()
	if role == RoleBackup {
		table = backupTransitions()
	}
	out := make([]State, 0, len(table))
	for st := range table {
		out = append(out, st)
	}
	slices.Sort(out)
	return out
}

// stateMachine is one side's state, its reason and when it was entered.
// The owner's mutex guards it.
type stateMachine struct {
	table  map[State][]State
	state  State
	reason string
	since  time.Time
	now    clock
	// spent is the time spent in each state left so far (the current one's
	// runs from since): the status's StateSeconds.
	spent map[State]time.Duration
	// notify, if set, is told of every change of state, in order, with the
	// owner's mutex held.
	notify func(Transition)
}

// Transition is one change of a side's state, as Options.OnTransition
// sees it.
type Transition struct {
	Pair   string
	Role   Role
	From   State
	To     State
	Reason string
	At     time.Time
}

func newStateMachine(table map[State][]State, now clock) stateMachine {
	return stateMachine{table: table, state: StateStarting, since: now(), now: now, spent: map[State]time.Duration{}}
}

// seconds is the time spent in each state, the current one included.
func (m *stateMachine) seconds() map[State]float64 {
	out := make(map[State]float64, len(m.spent)+1)
	for st, d := range m.spent {
		out[st] = d.Seconds()
	}
	out[m.state] += m.now().Sub(m.since).Seconds()
	return out
}

// can reports whether the table allows moving to next.
func (m *stateMachine) can(next State) bool {
	return slices.Contains(m.table[m.state], next)
}

// to moves to next with reason if the table allows it, and reports whether
// it did.
func (m *stateMachine) to(next State, reason string) bool {
	if !m.can(next) {
		return false
	}
	from := m.state
	if next != from {
		now := m.now()
		if m.spent != nil {
			m.spent[from] += now.Sub(m.since)
		}
		m.since = now
	}
	m.state, m.reason = next, reason
	if next != from && m.notify != nil {
		m.notify(Transition{From: from, To: next, Reason: reason, At: m.since})
	}
	return true
}

// transitionNotifier completes a Transition with the side's pair and role
// for fn; nil when fn is.
func transitionNotifier(fn func(Transition), pair string, role Role) func(Transition) {
	if fn == nil {
		return nil
	}
	return func(t Transition) {
		t.Pair, t.Role = pair, role
		fn(t)
	}
}
