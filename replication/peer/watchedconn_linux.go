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

// lastAckRecv is how long ago the peer's kernel last acknowledged data from
// this side (TCP_INFO tcpi_last_ack_recv, milliseconds). This side sends a
// heartbeat every interval, which the peer's kernel acknowledges within a
// round trip plus its delayed-ACK time (≤ 40 ms on Linux) whether or not
// the peer process gets to run.
func (c *watchedConn) lastAckRecv() (time.Duration, bool) {
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
	return time.Duration(info.Last_ack_recv) * time.Millisecond, true
}
