// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"fmt"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
)

// cgroupV1Hierarchies names the cgroup v1 hierarchies mounted on this host
// (the base names of their mount points: "cpu,cpuacct", "systemd", ...),
// the sub-mounts runc makes under a container's cgroup mount (runc's
// getCgroupMounts); none on a cgroup v2 host, where the cgroup mount is a
// real cgroup2 mount that CRIU dumps. A variable for tests.
var cgroupV1Hierarchies = func() ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
	if err != nil {
		return nil, fmt.Errorf("list the cgroup v1 mounts: %w", err)
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range infos {
		name := filepath.Base(m.Mountpoint)
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}
