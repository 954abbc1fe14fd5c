// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountImageTmpfs mounts a tmpfs of size bytes at dir (created) for
// checkpoint images: CRIU writes every page of the container each epoch, and
// on tmpfs that is a memory copy, not disk I/O. The returned function
// unmounts it (lazily, so that a leftover open file cannot pin it) and removes dir.
//
// The tmpfs allocates large folios where a file grows past them
// (huge=within_size): CRIU's page images are written in long sequential
// runs, and on this machine's kernel that halves the cost of writing them,
// which is paid while the container is frozen. Small image files still take
// 4 KiB pages (huge=always would give each one 2 MiB). A kernel without
// transparent huge pages refuses the option; the tmpfs is then mounted
// without it.
func MountImageTmpfs(dir string, size int64) (unmount func() error, err error) {
	return mountImageTmpfs(dir, size, true)
}

func mountImageTmpfs(dir string, size int64, largeFolios bool) (unmount func() error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create image tmpfs dir %s: %w", dir, err)
	}
	data := "mode=0700"
	if size > 0 {
		data += fmt.Sprintf(",size=%d", size)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mount := func(data string) error { return unix.Mount("tmpfs", dir, "tmpfs", flags, data) }
	if largeFolios {
		err = mount(data + ",huge=within_size")
	}
	if !largeFolios || errors.Is(err, unix.EINVAL) {
		err = mount(data)
	}
	if err != nil {
		return nil, fmt.Errorf("mount image tmpfs at %s: %w", dir, err)
	}
	return func() error {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount image tmpfs %s: %w", dir, err)
		}
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("remove image tmpfs dir %s: %w", dir, err)
		}
		return nil
	}, nil
}
