// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"slices"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
)

// TestStandbyPidsKeepShimOnContainerdRestart: a restarted containerd asks
// each shim it reloads for its task's pids and deletes a task that lists
// none as leaked (core/runtime/v2 shouldCleanupShim: no sandbox and no
// pids). A backup's placeholder must therefore list its pid while it
// stands by, and nothing once it has ended.
func TestStandbyPidsKeepShimOnContainerdRestart(t *testing.T) {
	const shimPid = 4321
	for _, tc := range []struct {
		name  string
		steps func(*standbyTask) error
		want  []uint32
	}{
		{"created", func(*standbyTask) error { return nil }, []uint32{shimPid}},
		{"standby", func(st *standbyTask) error { _, err := st.start(); return err }, []uint32{shimPid}},
		{"killed", func(st *standbyTask) error {
			if _, err := st.start(); err != nil {
				return err
			}
			_, err := st.kill(15)
			return err
		}, nil},
		{"failed promotion", func(st *standbyTask) error {
			if _, err := st.start(); err != nil {
				return err
			}
			st.exit(255)
			return nil
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStandbyTask(shimPid)
			if err := tc.steps(st); err != nil {
				t.Fatal(err)
			}
			s := &TaskService{replicas: map[string]*replica{"c1": {id: "c1", standby: st}}}
			resp, err := s.Pids(context.Background(), &taskAPI.PidsRequest{ID: "c1"})
			if err != nil {
				t.Fatalf("Pids: %v", err)
			}
			var got []uint32
			for _, p := range resp.Processes {
				got = append(got, p.Pid)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Pids of a placeholder %s: %v, want %v (none: a restarted containerd deletes the task as leaked)", tc.name, got, tc.want)
			}
		})
	}
}
