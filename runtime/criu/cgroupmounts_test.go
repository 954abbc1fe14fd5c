// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"slices"
	"strings"
	"testing"
)

// A cgroup v1 host (systemd's hybrid layout): one bind per v1 hierarchy,
// named after its mount point; cgroup2 (unified) and other file systems are
// not cgroup v1 hierarchies, and a second mount of one is listed once.
func TestCgroupV1Binds(t *testing.T) {
	mountinfo := `25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
35 25 0:30 /x /mnt/other/freezer rw - cgroup cgroup rw,freezer
`
	got, err := cgroupV1Binds(strings.NewReader(mountinfo), "/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/freezer"}
	if !slices.Equal(got, want) {
		t.Errorf("cgroupV1Binds = %q, want %q", got, want)
	}
}
