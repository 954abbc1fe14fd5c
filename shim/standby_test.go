// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// TestStandbyTask walks the placeholder's state machine through every path
// containerd and the promotion can drive.
func TestStandbyTask(t *testing.T) {
	type step struct {
		op      string // start, promote, fail (a promotion that did not restore), kill, exit, delete
		arg     int
		wantErr error
		// after the step
		state    standbyState
		status   int
		promoted bool // kill or delete answered "the runc service's"
	}
	const shimPid, restoredPid = 100, 4242
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"created, deleted: never promoted", []step{
			{op: "delete", state: standbyExited},
			{op: "promote", wantErr: errdefs.ErrFailedPrecondition, state: standbyExited},
		}},
		{"standby killed: 128+signal", []step{
			{op: "start", state: standbyRunning},
			{op: "delete", wantErr: errdefs.ErrFailedPrecondition, state: standbyRunning},
			{op: "kill", arg: 15, state: standbyExited, status: 143},
			{op: "kill", arg: 9, wantErr: errdefs.ErrNotFound, state: standbyExited, status: 143},
			{op: "promote", wantErr: errdefs.ErrFailedPrecondition, state: standbyExited, status: 143},
			{op: "delete", state: standbyExited, status: 143},
		}},
		{"promoted: the runc service's task", []step{
			{op: "start", state: standbyRunning},
			{op: "promote", state: standbyPromoted},
			{op: "kill", arg: 9, state: standbyPromoted, promoted: true},
			{op: "delete", state: standbyPromoted, promoted: true},
			{op: "exit", arg: 255, state: standbyPromoted}, // never ends after a promotion
			{op: "promote", wantErr: errdefs.ErrFailedPrecondition, state: standbyPromoted},
		}},
		{"restore failed, then the promotion ends the task", []step{
			{op: "start", state: standbyRunning},
			{op: "fail", state: standbyRunning},
			{op: "exit", arg: 255, state: standbyExited, status: 255},
			{op: "exit", arg: 0, state: standbyExited, status: 255}, // once
		}},
		{"start twice", []step{
			{op: "start", state: standbyRunning},
			{op: "start", wantErr: errdefs.ErrFailedPrecondition, state: standbyRunning},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := newStandbyTask(shimPid)
			for i, s := range tc.steps {
				var err error
				promoted := false
				switch s.op {
				case "start":
					_, err = task.start()
				case "promote", "fail":
					var done func(int)
					if done, err = task.beginPromotion(); err == nil {
						if s.op == "promote" {
							done(restoredPid)
						} else {
							done(0)
						}
					}
				case "kill":
					promoted, err = task.kill(uint32(s.arg))
				case "exit":
					task.exit(s.arg)
				case "delete":
					promoted, err = task.canDelete()
				}
				if (s.wantErr == nil) != (err == nil) || s.wantErr != nil && !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d %s: err %v, want %v", i, s.op, err, s.wantErr)
				}
				if promoted != s.promoted {
					t.Fatalf("step %d %s: answered promoted %v, want %v", i, s.op, promoted, s.promoted)
				}
				snap := task.snapshot()
				if snap.State != s.state || snap.Pid != shimPid || snap.Status != s.status {
					t.Fatalf("step %d %s: %s pid %d status %d, want %s pid %d status %d", i, s.op,
						snap.State, snap.Pid, snap.Status, s.state, shimPid, s.status)
				}
				if got := task.isPromoted(); got != (snap.State == standbyPromoted) {
					t.Fatalf("step %d: isPromoted %v in state %s", i, got, snap.State)
				}
				if want := map[bool]int{true: restoredPid}[snap.State == standbyPromoted]; task.restoredPid() != want {
					t.Fatalf("step %d: restored pid %d in state %s, want %d", i, task.restoredPid(), snap.State, want)
				}
				select {
				case <-task.exited:
					if snap.State != standbyExited {
						t.Fatalf("step %d: exited closed in state %s", i, snap.State)
					}
				default:
					if snap.State == standbyExited {
						t.Fatalf("step %d: exited not closed", i)
					}
				}
			}
		})
	}
}

// TestKillWaitsForPromotion: a kill that comes during a restore waits for
// it and then belongs to the restored task, so the placeholder never ends
// after containerd has been told nothing about a promotion.
func TestKillWaitsForPromotion(t *testing.T) {
	task := newStandbyTask(100)
	if _, err := task.start(); err != nil {
		t.Fatal(err)
	}
	done, err := task.beginPromotion()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		promoted bool
		err      error
	}
	killed := make(chan result, 1)
	go func() {
		p, err := task.kill(9)
		killed <- result{p, err}
	}()
	select {
	case r := <-killed:
		t.Fatalf("kill returned during the restore: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	done(4242)
	if r := <-killed; r.err != nil || !r.promoted {
		t.Fatalf("kill after the promotion: %+v, want handed to the runc service", r)
	}
	if task.snapshot().State != standbyPromoted {
		t.Fatalf("state %s after kill, want promoted", task.snapshot().State)
	}
}
