// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// standbyTask is the task containerd sees for a backup container. The
// backup does not run the container: it holds checkpoints and restores one
// when the primary fails. containerd still needs a task (ctr task ls shows
// it RUNNING, kill/wait/delete work), so until a promotion the task is a
// placeholder whose pid is the shim's own; on promotion the restored
// container's init is adopted as the task's process, without any exit in
// between, so containerd never sees the task end.
//
//	created --start--> standby --adopt--> restored --exit--> exited
//	   \                  \------kill-------------------------^
//	    \------------------kill-------------------------------^
type standbyTask struct {
	mu       sync.Mutex
	state    standbyState
	pid      int // placeholder (shim pid) or the restored init
	status   int
	exitedAt time.Time
	exited   chan struct{}
}

type standbyState int

const (
	standbyCreated  standbyState = iota
	standbyRunning               // placeholder: replication standby
	standbyRestored              // the restored container is the task
	standbyExited
)

func (s standbyState) String() string {
	return [...]string{"created", "standby", "restored", "exited"}[s]
}

func newStandbyTask(placeholderPid int) *standbyTask {
	return &standbyTask{pid: placeholderPid, exited: make(chan struct{})}
}

// standbySnapshot is what State and Wait report.
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

// adopt makes the restored container's init the task's process.
func (t *standbyTask) adopt(pid int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != standbyRunning && t.state != standbyCreated {
		return fmt.Errorf("cannot adopt restored pid %d: task is %s: %w", pid, t.state, errdefs.ErrFailedPrecondition)
	}
	t.state, t.pid = standbyRestored, pid
	return nil
}

// kill decides what a signal does: a placeholder ends at once with
// 128+signal, as a process killed by it would; a restored container is
// signalled (the caller does) and ends when its init is reaped. It returns
// the pid to signal, 0 if none.
func (t *standbyTask) kill(sig uint32) (signalPid int, exited bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case standbyRestored:
		return t.pid, false, nil
	case standbyExited:
		return 0, false, fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	default:
		t.exitLocked(128 + int(sig))
		return 0, true, nil
	}
}

// exit records the end of the task's process, once; it reports whether
// this call ended it.
func (t *standbyTask) exit(status int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == standbyExited {
		return false
	}
	t.exitLocked(status)
	return true
}

func (t *standbyTask) exitLocked(status int) {
	t.state, t.status, t.exitedAt = standbyExited, status, time.Now()
	close(t.exited)
}

// restoredPid is the adopted pid, 0 before adoption.
func (t *standbyTask) restoredPid() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != standbyRestored {
		return 0
	}
	return t.pid
}

// canDelete refuses to delete a running task, like the runc service.
func (t *standbyTask) canDelete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == standbyRunning || t.state == standbyRestored {
		return fmt.Errorf("task is %s; kill it first: %w", t.state, errdefs.ErrFailedPrecondition)
	}
	return nil
}
