// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"fmt"
	"path/filepath"

	"github.com/containerd/cgroups/v3"
	"github.com/moby/sys/mountinfo"
)

// cgroupV1Binds returns the destinations of the bind mounts runc makes for
// a "cgroup" mount at dest on a cgroup v1 host without a user namespace:
// a tmpfs at dest with each v1 hierarchy of the host bind-mounted under
// the hierarchy's base name (runc 1.1.5, libcontainer getCgroupMounts).
// Their sources are outside the container, so CRIU must be told they are
// external, as runc's checkpoint does; on cgroup v2, or in a user
// namespace, runc mounts cgroupfs itself and there is nothing to declare.
// nerdctl's specs have such a mount; ctr's default spec has none.
func cgroupV1Binds(dest string, userns bool) ([]string, error) {
	if userns || cgroups.Mode() == cgroups.Unified {
		return nil, nil
	}
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
	if err != nil {
		return nil, fmt.Errorf("cgroup v1 hierarchies: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		d := filepath.Join(dest, filepath.Base(m.Mountpoint))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, nil
}
