// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// Exit statuses of the helper (cmd/rrc-uffd).
const (
	// HelperExitFailed: the userfaultfd could not be made or sent, or the
	// command line was wrong.
	HelperExitFailed = 1
	// HelperExitRefused: the target has a seccomp filter that could not be
	// suspended (ErrSeccomp).
	HelperExitRefused = 2
)

// helperWaitDelay is how long Take waits for the helper after ctx is done
// and it was sent SIGTERM, before it is killed. The helper gives up by
// itself as long as the target has not stopped, and otherwise finishes
// restoring the target's registers, which takes well under a millisecond.
const helperWaitDelay = 5 * time.Second

// Take runs the helper (argv, e.g. ["rrc-uffd"]; the pid is appended) for
// pid and returns the userfaultfd it made in pid's address space, for
// Attach. The helper gets one end of a unix socket as fd 3 and sends the
// descriptor over it.
//
// l starts the helper; the shim, a subreaper, passes one built on its
// reaper, tests launch.OS.
//
// When ctx is done the helper is sent SIGTERM (it lets go of the target
// at the next safe point) and killed only helperWaitDelay later. A target
// whose seccomp filter could not be suspended is refused with an error
// wrapping ErrSeccomp.
func Take(ctx context.Context, helper []string, l launch.Launcher, pid int) (*os.File, error) {
	if len(helper) == 0 {
		return nil, errors.New("take userfaultfd: no helper command")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("take userfaultfd of %d: socketpair: %w", pid, err)
	}
	ours := os.NewFile(uintptr(fds[0]), "rrc-uffd socket")
	theirs := os.NewFile(uintptr(fds[1]), "rrc-uffd socket")
	defer ours.Close()

	cmd := exec.CommandContext(ctx, helper[0], append(helper[1:], strconv.Itoa(pid))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = helperWaitDelay
	wait, err := launch.Or(l).Start(cmd)
	theirs.Close() // the helper has its copy: its exit ends our reads
	if err != nil {
		return nil, fmt.Errorf("take userfaultfd of %d: start %s: %w", pid, helper[0], err)
	}
	status, werr := wait()
	msg := strings.TrimSpace(stderr.String())
	switch {
	case werr != nil:
		return nil, fmt.Errorf("take userfaultfd of %d: wait for %s: %w", pid, helper[0], werr)
	case status == HelperExitRefused:
		return nil, refusedError{fmt.Sprintf("take userfaultfd of %d: %s", pid, msg)}
	case status != 0:
		return nil, fmt.Errorf("take userfaultfd of %d: %s exit status %d: %s", pid, helper[0], status, msg)
	}
	f, err := recvFile(int(ours.Fd()))
	if err != nil {
		return nil, fmt.Errorf("take userfaultfd of %d: receive it from %s: %w", pid, helper[0], err)
	}
	return f, nil
}

// refusedError is the helper's refusal: its message, and ErrSeccomp.
type refusedError struct{ msg string }

func (e refusedError) Error() string { return e.msg }
func (e refusedError) Unwrap() error { return ErrSeccomp }

// SendFile sends f over the unix socket sock as a one-byte message with
// SCM_RIGHTS (the helper's side of Take).
func SendFile(sock int, f *os.File) error {
	if err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return fmt.Errorf("send %s: %w", f.Name(), err)
	}
	return nil
}

// recvFile receives one descriptor sent by SendFile. The helper has exited
// by then, so a missing message reads as end of file instead of blocking.
func recvFile(sock int) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room for a few, to close extras
	n, oobn, flags, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, errors.New("no message")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	if flags&unix.MSG_CTRUNC != 0 || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("got %d descriptors (flags %#x), want 1", len(fds), flags)
	}
	return os.NewFile(uintptr(fds[0]), "userfaultfd"), nil
}
