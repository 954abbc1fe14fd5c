// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// unread is the number of bytes received by the kernel and not yet read
// (TIOCINQ, alias SIOCINQ, on a TCP socket).
func (c *watchedConn) unread() (int, bool) {
	if c.raw == nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	err := c.raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	if err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}

// peerKernelSilence is how long the peer's kernel has given no sign of
// life, from TCP_INFO (kernelSilence).
func (c *watchedConn) peerKernelSilence() (time.Duration, bool) {
	if c.raw == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false
	}
	return kernelSilence(info.Unacked, info.Probes, info.Last_ack_recv), true
}
