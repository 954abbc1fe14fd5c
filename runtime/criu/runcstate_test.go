// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"strings"
	"testing"
)

// A trimmed runc 1.1.5 state.json of a container started by containerd's
// runc shim with ctr run --net-host.
const sampleState = `{"id":"r0","init_process_pid":14882,"init_process_start":231816,
"config":{"rootfs":"/run/rrcrt/a/io.containerd.runtime.v2.task/rrcrt-a/r0/rootfs",
"mounts":[{"source":"proc","destination":"/proc","device":"proc"},
{"source":"tmpfs","destination":"/dev","device":"tmpfs"},
{"source":"shm","destination":"/dev/shm","device":"tmpfs"},
{"source":"tmpfs","destination":"/run","device":"tmpfs"},
{"source":"/etc/hosts","destination":"/etc/hosts","device":"bind"},
{"source":"/etc/resolv.conf","destination":"/etc/resolv.conf","device":"bind"}],
"devices":[{"path":"/dev/null"},{"path":"/dev/zero"}],
"mask_paths":["/proc/acpi","/proc/kcore","/proc/nonexistent"],
"namespaces":[{"type":"NEWPID","path":""},{"type":"NEWNS","path":""}],
"labels":["bundle=/run/rrcrt/a/io.containerd.runtime.v2.task/rrcrt-a/r0"]},
"cgroup_paths":{"":"/sys/fs/cgroup/unified/rrcrt-a/r0","freezer":"/sys/fs/cgroup/freezer/rrcrt-a/r0"},
"external_descriptors":["pipe:[1]","pipe:[2]","pipe:[3]"]}`

func TestParseRuncState(t *testing.T) {
	tests := []struct {
		name, json string
		wantErr    string
		check      func(t *testing.T, s *RuncState)
	}{
		{name: "containerd shim container", json: sampleState, check: func(t *testing.T, s *RuncState) {
			if s.InitPid != 14882 || s.ID != "r0" {
				t.Errorf("pid/id = %d/%q", s.InitPid, s.ID)
			}
			if got := s.Bundle(); got != "/run/rrcrt/a/io.containerd.runtime.v2.task/rrcrt-a/r0" {
				t.Errorf("Bundle = %q", got)
			}
			if p, v2 := s.FreezerPath(); p != "/sys/fs/cgroup/freezer/rrcrt-a/r0" || v2 {
				t.Errorf("FreezerPath = %q, %v", p, v2)
			}
			if own, _ := s.HasNamespace("NEWNET"); own {
				t.Error("--net-host container has its own NEWNET")
			}
			if len(s.ExternalDescriptors) != 3 {
				t.Errorf("descriptors = %v", s.ExternalDescriptors)
			}
		}},
		{name: "cgroup v2 only", json: `{"id":"x","init_process_pid":2,"config":{"rootfs":"/r"},"cgroup_paths":{"":"/sys/fs/cgroup/x"}}`,
			check: func(t *testing.T, s *RuncState) {
				if p, v2 := s.FreezerPath(); p != "/sys/fs/cgroup/x" || !v2 {
					t.Errorf("FreezerPath = %q, %v", p, v2)
				}
			}},
		{name: "stopped container", json: `{"id":"x","init_process_pid":0,"config":{"rootfs":"/r"}}`, wantErr: "no init pid"},
		{name: "no rootfs", json: `{"id":"x","init_process_pid":5,"config":{}}`, wantErr: "no rootfs"},
		{name: "garbage", json: `{`, wantErr: "parse runc state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseRuncState([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}
