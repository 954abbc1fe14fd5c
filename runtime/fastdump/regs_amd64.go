// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	ntX86Xstate       = 0x202  // NT_X86_XSTATE
	ptraceGetSigmask  = 0x420a // PTRACE_GETSIGMASK
	xstateHeaderStart = 512    // the XSAVE header follows the legacy FXSAVE area
)

// The kernel's internal restart codes, seen in rax at a stop inside a
// system call.
const (
	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516
)

// Thread is what a stopped thread's core image needs from the thread itself
// that changes while it runs.
type Thread struct {
	Tid     int
	Regs    unix.PtraceRegs
	XState  []byte // standard-format XSAVE area (legacy area, header, components)
	SigMask uint64 // blocked signals
}

// CaptureThread reads a stopped thread's registers, extended state and
// signal mask. An interrupted system call is left as CRIU's dump leaves it
// (compel's get_task_regs): set up to restart, or to return EINTR for one
// the kernel would restart through restart_syscall.
func CaptureThread(tid int, xstateSize int) (Thread, error) {
	t := Thread{Tid: tid, XState: make([]byte, xstateSize)}
	if err := unix.PtraceGetRegs(tid, &t.Regs); err != nil {
		return t, fmt.Errorf("thread %d: registers: %w", tid, err)
	}
	iov := unix.Iovec{Base: &t.XState[0]}
	iov.SetLen(len(t.XState))
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid), ntX86Xstate, uintptr(unsafe.Pointer(&iov)), 0, 0); e != 0 {
		return t, fmt.Errorf("thread %d: extended state: %w", tid, e)
	}
	t.XState = t.XState[:iov.Len]
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceGetSigmask, uintptr(tid), 8, uintptr(unsafe.Pointer(&t.SigMask)), 0, 0); e != 0 {
		return t, fmt.Errorf("thread %d: signal mask: %w", tid, e)
	}
	t.Regs = criuRestart(t.Regs)
	return t, nil
}

// criuRestart is compel's treatment of a thread stopped in a system call.
func criuRestart(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) < 0 {
		return r
	}
	switch -int64(r.Rax) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		r.Rax = r.Orig_rax
		r.Rip -= 2
	case errRestartRestartBlock:
		eintr := -int64(unix.EINTR)
		r.Rax = uint64(eintr)
	}
	return r
}

// XStateSize is the size of the XSAVE area this CPU's enabled features
// need (CPUID 0xD: the largest any combination needs), at least the legacy
// area and header.
func XStateSize() int {
	_, _, maxSize, _ := cpuid(0xd, 0)
	return max(int(maxSize), xstateHeaderStart+64)
}
