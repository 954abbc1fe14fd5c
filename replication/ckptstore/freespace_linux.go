// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import "syscall"

// freeBytes is the space available to an unprivileged writer under dir.
func freeBytes(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}
