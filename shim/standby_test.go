// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// TestStandbyTask walks the standby task's state machine through every
// path containerd can drive.
func TestStandbyTask(t *testing.T) {
	type step struct {
		op      string // start, adopt, kill, exit, delete
		arg     int
		wantErr error
		// after the step
		state  standbyState
		pid    int
		status int
	}
	const shimPid, restored = 100, 4242
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"created, deleted", []step{
			{op: "delete", state: standbyCreated, pid: shimPid},
		}},
		{"standby killed: 128+signal", []step{
			{op: "start", state: standbyRunning, pid: shimPid},
			{op: "delete", wantErr: errdefs.ErrFailedPrecondition, state: standbyRunning, pid: shimPid},
			{op: "kill", arg: 15, state: standbyExited, pid: shimPid, status: 143},
			{op: "kill", arg: 9, wantErr: errdefs.ErrNotFound, state: standbyExited, pid: shimPid, status: 143},
			{op: "delete", state: standbyExited, pid: shimPid, status: 143},
		}},
		{"promoted, restored init exits", []step{
			{op: "start", state: standbyRunning, pid: shimPid},
			{op: "adopt", arg: restored, state: standbyRestored, pid: restored},
			{op: "kill", arg: 9, state: standbyRestored, pid: restored}, // signalled, not ended
			{op: "delete", wantErr: errdefs.ErrFailedPrecondition, state: standbyRestored, pid: restored},
			{op: "exit", arg: 137, state: standbyExited, pid: restored, status: 137},
			{op: "exit", arg: 0, state: standbyExited, pid: restored, status: 137}, // once
			{op: "delete", state: standbyExited, pid: restored, status: 137},
		}},
		{"failed promotion ends the task", []step{
			{op: "start", state: standbyRunning, pid: shimPid},
			{op: "exit", arg: 255, state: standbyExited, pid: shimPid, status: 255},
			{op: "adopt", arg: restored, wantErr: errdefs.ErrFailedPrecondition, state: standbyExited, pid: shimPid, status: 255},
		}},
		{"start twice", []step{
			{op: "start", state: standbyRunning, pid: shimPid},
			{op: "start", wantErr: errdefs.ErrFailedPrecondition, state: standbyRunning, pid: shimPid},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := newStandbyTask(shimPid)
			for i, s := range tc.steps {
				var err error
				switch s.op {
				case "start":
					_, err = task.start()
				case "adopt":
					err = task.adopt(s.arg)
				case "kill":
					var pid int
					var exited bool
					pid, exited, err = task.kill(uint32(s.arg))
					if err == nil && s.state == standbyRestored && (pid != restored || exited) {
						t.Errorf("step %d: kill of a restored task: pid %d exited %v", i, pid, exited)
					}
				case "exit":
					task.exit(s.arg)
				case "delete":
					err = task.canDelete()
				}
				if (s.wantErr == nil) != (err == nil) || s.wantErr != nil && !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d %s: err %v, want %v", i, s.op, err, s.wantErr)
				}
				snap := task.snapshot()
				if snap.State != s.state || snap.Pid != s.pid || snap.Status != s.status {
					t.Fatalf("step %d %s: %s pid %d status %d, want %s pid %d status %d", i, s.op,
						snap.State, snap.Pid, snap.Status, s.state, s.pid, s.status)
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
