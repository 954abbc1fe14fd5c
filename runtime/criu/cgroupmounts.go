// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupBindDests are the mount points inside the container of what runc
// 1.1.5 makes of a "cgroup" mount on cgroup v1 without a cgroup namespace
// (dockerd's spec has one at /sys/fs/cgroup; containerd's default spec has
// none): a bind mount of the container's own cgroup directory per host
// hierarchy, named after the hierarchy's mount point (getCgroupMounts).
// CRIU cannot dump a bind mount of part of a cgroup file system, so they are
// external, as runc's checkpoint declares them. On cgroup v2 or in a cgroup
// namespace they are real mounts, and nil is returned.
func cgroupBindDests(st *RuncState, dest string) ([]string, error) {
	if own, _ := st.HasNamespace("NEWCGROUP"); own {
		return nil, nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		return nil, nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts of %s: %w", dest, err)
	}
	defer f.Close()
	return cgroupV1Binds(f, dest)
}

// cgroupV1Binds lists dest/<base name of the mount point> of each cgroup v1
// hierarchy in mountinfo, once each.
func cgroupV1Binds(mountinfo io.Reader, dest string) ([]string, error) {
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := map[string]bool{}
	var out []string
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || g[0] != "cgroup" {
			continue
		}
		d := filepath.Join(dest, filepath.Base(unescapeMountinfo(f[4])))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}
