// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// standbyTask is the placeholder containerd sees for a backup container
// until a promotion: the backup runs nothing, but containerd needs a task
// (ctr task ls shows it RUNNING with the shim's pid; kill, wait and delete
// work). A promotion restores the container through the runc task service,
// which owns the task from then on; the placeholder then answers nothing
// and never ends, so containerd sees one task and one exit.
//
//	created --start--> standby --promotion--> promoted (runc task service)
//	   \                  \--kill, failed promotion--> exited
//	    \--kill------------------------------------------^
type standbyTask struct {
	// turn is held across a promotion's restore: a kill, start or delete
	// waits for it, then goes to whichever task is the container's.
	turn sync.Mutex

	mu       sync.Mutex
	state    standbyState
	pid      int // the shim's
	restored int // the restored init's, once promoted
	status   int
	exitedAt time.Time
	exited   chan struct{} // closed when the placeholder ends
	promoted chan struct{} // closed when the runc task service owns the task
}

type standbyState int

const (
	standbyCreated  standbyState = iota
	standbyRunning               // placeholder: replication standby
	standbyPromoted              // the restored container is the runc service's task
	standbyExited
)

func (s standbyState) String() string {
	return [...]string{"created", "standby", "promoted", "exited"}[s]
}

func newStandbyTask(placeholderPid int) *standbyTask {
	return &standbyTask{pid: placeholderPid, exited: make(chan struct{}), promoted: make(chan struct{})}
}

// standbySnapshot is what State, Wait and Delete report of a placeholder.
type standbySnapshot struct {
	State    standbyState
	Pid      int
	Status   int
	ExitedAt time.Time
}

func (t *standbyTask) snapshot() standbySnapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	return standbySnapshot{State: t.state, Pid: t.pid, Status: t.status, ExitedAt: t.exitedAt}
}

// isPromoted: every call goes to the runc task service.
func (t *standbyTask) isPromoted() bool {
	select {
	case <-t.promoted:
		return true
	default:
		return false
	}
}

// restoredPid is the restored init's pid, 0 before a promotion.
func (t *standbyTask) restoredPid() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.restored
}

// start moves created → standby.
func (t *standbyTask) start() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != standbyCreated {
		return 0, fmt.Errorf("task is %s, not created: %w", t.state, errdefs.ErrFailedPrecondition)
	}
	t.state = standbyRunning
	return t.pid, nil
}

// beginPromotion takes the task's turn for a restore; done(pid) hands the
// task, whose init the restore made pid, to the runc service; done(0)
// leaves the placeholder as it was.
// A placeholder that has ended is not promoted: its exit was published.
func (t *standbyTask) beginPromotion() (done func(restoredPid int), err error) {
	t.turn.Lock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == standbyExited || t.state == standbyPromoted {
		t.turn.Unlock()
		return nil, fmt.Errorf("task is %s: %w", t.state, errdefs.ErrFailedPrecondition)
	}
	return func(restoredPid int) {
		if restoredPid > 0 {
			t.mu.Lock()
			t.state, t.restored = standbyPromoted, restoredPid
			close(t.promoted)
			t.mu.Unlock()
		}
		t.turn.Unlock()
	}, nil
}

// kill ends the placeholder with 128+signal, as a process killed by it
// would end. promoted says the runc service owns the task: the caller
// signals it there.
func (t *standbyTask) kill(sig uint32) (promoted bool, err error) {
	t.turn.Lock()
	defer t.turn.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case standbyPromoted:
		return true, nil
	case standbyExited:
		return false, fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	t.exitLocked(128 + int(sig))
	return false, nil
}

// exit ends the placeholder (a failed promotion); it reports whether this
// call ended it.
func (t *standbyTask) exit(status int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == standbyExited || t.state == standbyPromoted {
		return false
	}
	t.exitLocked(status)
	return true
}

func (t *standbyTask) exitLocked(status int) {
	t.state, t.status, t.exitedAt = standbyExited, status, time.Now()
	close(t.exited)
}

// canDelete refuses to delete a running placeholder, like the runc
// service refuses a running task; promoted says the runc service owns it.
func (t *standbyTask) canDelete() (promoted bool, err error) {
	t.turn.Lock()
	defer t.turn.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case standbyPromoted:
		return true, nil
	case standbyRunning:
		return false, fmt.Errorf("task is %s; kill it first: %w", t.state, errdefs.ErrFailedPrecondition)
	case standbyCreated:
		// Never started, about to go: no promotion may restore it now.
		t.state = standbyExited
		close(t.exited)
	}
	return false, nil
}
