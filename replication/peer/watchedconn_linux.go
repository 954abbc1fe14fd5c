package peer

import (
	"syscall"
	"unsafe"
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
