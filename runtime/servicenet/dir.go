// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// prepareDir makes dir and turns it into a shared bind mount of itself,
// as iproute2 does for /run/netns. Why: a process that makes a new mount
// namespace (unshare -m, ip netns exec) copies every mount, our namespace
// binds included; with a private parent those copies would keep the network
// namespace (and its service interface, still answering ARP) alive after
// Remove. Under a shared mount the copies are peers, and Remove's unmount
// propagates to them.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make directory %s: %w", dir, err)
	}
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// ReleaseDir undoes what Create did to dir itself (its shared bind mount)
// once no namespace is mounted under it; it fails with the leftovers named
// otherwise. The directory stays. Callers that own dir call it when the last
// container using it is gone (a test, an uninstall).
func ReleaseDir(dir string) error {
	dir = filepath.Clean(dir)
	mps, err := mountPointsUnder(dir)
	if err != nil {
		return err
	}
	var busy []string
	self := false
	for _, mp := range mps {
		if mp == dir {
			self = true
		} else {
			busy = append(busy, mp)
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("release %s: still mounted under it: %s", dir, strings.Join(busy, ", "))
	}
	if self {
		// No MNT_DETACH: if a namespace was mounted under dir meanwhile
		// the unmount fails (EBUSY) instead of hiding it.
		for {
			if err := unix.Unmount(dir, 0); err != nil {
				if errors.Is(err, unix.EINVAL) {
					break // no longer a mount point
				}
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			if m, err := isMountPoint(dir); err != nil || !m {
				return err
			}
		}
	}
	return nil
}

func isMountPoint(path string) (bool, error) {
	mps, err := mountPointsUnder(path)
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp == path {
			return true, nil
		}
	}
	return false, nil
}

// mountPointsUnder lists the mount points at or under dir.
func mountPointsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Clean(dir)))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := make([]string, 0, len(infos))
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}
