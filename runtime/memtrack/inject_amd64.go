// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// x86_64 system call numbers and restart codes (arch/x86/entry/syscalls,
// include/linux/errno.h).
const (
	sysClose          = 3
	sysRestartSyscall = 219
	sysUserfaultfd    = 323

	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516

	// sigRTMin is the kernel's SIGRTMIN: signals below it do not queue.
	sigRTMin = 32
)

// stepTimeout bounds the wait for one injected system call. They do not
// block, so this only matters if something is badly wrong.
const stepTimeout = 2 * time.Second

// MakeUffd makes a userfaultfd in pid's address space and returns this
// process's copy of it: it seizes pid's main thread with ptrace, interrupts
// it, makes it execute userfaultfd(O_CLOEXEC|O_NONBLOCK|UFFD_USER_MODE_ONLY)
// through a syscall instruction of its vDSO, takes the descriptor with
// pidfd_getfd, makes it close its own copy, restores its registers (with
// the restart of an interrupted system call that the kernel would have
// done) and detaches. A seccomp filter of the target is suspended while it
// is seized (PTRACE_O_SUSPEND_SECCOMP, as CRIU does), so that the filter
// neither sees nor refuses the injected calls; if that is refused, so is
// the target (ErrSeccomp).
//
// It is meant for a short-lived helper process (rrc-uffd), for two reasons.
// The caller must not reap with wait4(-1) (the shim's reaper would steal the
// ptrace stops). And until the target stops for the interrupt (waited for
// until ctx is done), it can only be let go by this process's exit: a
// tracee that is running cannot be detached. ctx is not looked at once the
// registers have been changed: the few steps until they are restored are
// always completed (the target is killed if this process dies in between,
// rather than left running with the injected registers). The target must
// not be frozen (cgroup freezer) or traced by anyone else (e.g. CRIU).
//
// Signals that arrive while the registers are injected are held back and
// delivered after the restore (the first one with its siginfo, any others
// with tgkill). An interrupted system call is then restarted after the
// handler, as with SA_RESTART, where the kernel would have failed it with
// EINTR for a handler without SA_RESTART: the same as if the signal had
// arrived just before the call.
func MakeUffd(ctx context.Context, pid int) (*os.File, error) {
	// A signal that arrives just before the interrupt is let through and
	// the injection started over (Go programs get SIGURG all the time).
	for attempt := 1; ; attempt++ {
		f, err := makeUffd(ctx, pid)
		if err == nil || !errors.Is(err, errSignalFirst) || attempt == signalFirstAttempts || ctx.Err() != nil {
			return f, err
		}
	}
}

// errSignalFirst: a signal stopped the target before the interrupt did; it
// was passed on and the target let go untouched.
var errSignalFirst = errors.New("try again")

// signalFirstAttempts bounds MakeUffd's attempts after errSignalFirst.
const signalFirstAttempts = 20

// makeUffd is one attempt of MakeUffd.
func makeUffd(ctx context.Context, pid int) (_ *os.File, err error) {
	seccomp, err := checkTarget(pid)
	if err != nil {
		return nil, fmt.Errorf("make userfaultfd in %d: %w", pid, err)
	}
	insn, err := findSyscallInsn(pid)
	if err != nil {
		return nil, fmt.Errorf("make userfaultfd in %d: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("make userfaultfd in %d: pidfd_open: %w", pid, err)
	}
	defer unix.Close(pidfd)

	// ptrace requests are accepted from the tracer thread only.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	tr := &tracee{tid: pid, insn: insn, seccomp: seccomp}
	if err := tr.stop(ctx); err != nil {
		return nil, fmt.Errorf("make userfaultfd in %d: %w", pid, err)
	}
	defer func() {
		if derr := tr.release(); derr != nil {
			err = errors.Join(err, derr)
		}
		if err != nil {
			err = fmt.Errorf("make userfaultfd in %d: %w", pid, err)
		}
	}()

	fd, err := tr.syscall(sysUserfaultfd, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly)
	if err != nil {
		return nil, fmt.Errorf("inject userfaultfd: %w", err)
	}
	if fd < 0 {
		return nil, fmt.Errorf("userfaultfd in the target: %w", unix.Errno(-fd))
	}
	ours, gerr := unix.PidfdGetfd(pidfd, int(fd), 0)
	if gerr != nil {
		gerr = fmt.Errorf("pidfd_getfd %d: %w", fd, gerr)
	}
	r, cerr := tr.syscall(sysClose, uint64(fd))
	switch {
	case cerr != nil:
		cerr = fmt.Errorf("inject close(%d): %w", fd, cerr)
	case r < 0:
		cerr = fmt.Errorf("close(%d) in the target: %w", fd, unix.Errno(-r))
	}
	if err := errors.Join(gerr, cerr); err != nil {
		if gerr == nil {
			unix.Close(ours)
		}
		return nil, err
	}
	return os.NewFile(uintptr(ours), "userfaultfd"), nil
}

// tracee is the seized main thread of the target.
type tracee struct {
	tid     int
	insn    uint64 // address of a syscall instruction
	seccomp bool   // has a seccomp mode, suspended while injected

	saved    unix.PtraceRegs
	seized   bool // attached; stopped between stop and release
	modified bool // registers changed since saved
	signals  []pendingSignal
}

// pendingSignal is a signal that arrived while the registers were
// injected, held back and passed on at release.
type pendingSignal struct {
	sig  unix.Signal
	info [128]byte // siginfo_t
}

// stop seizes the thread, interrupts it and waits (until ctx is done) for
// the interrupt's stop, then saves its registers.
func (t *tracee) stop(ctx context.Context) error {
	if err := unix.PtraceSeize(t.tid); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("ptrace seize (traced by another process?): %w", err)
		}
		return fmt.Errorf("ptrace seize: %w", err)
	}
	t.seized = true
	if err := unix.PtraceInterrupt(t.tid); err != nil {
		return fmt.Errorf("ptrace interrupt: %w", err)
	}
	ws, err := t.wait(ctx.Done(), deadline(ctx))
	if err != nil {
		return fmt.Errorf("wait for it to stop: %w", err)
	}
	switch {
	case ws.Stopped() && ws.StopSignal() == unix.SIGTRAP && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP:
		// The interrupt's stop.
	case ws.Stopped() && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP:
		return errors.Join(fmt.Errorf("stopped by %s (group-stop); not touched", unix.SignalName(ws.StopSignal())), t.detach(0))
	case ws.Stopped():
		// A signal came first: pass it on.
		return errors.Join(fmt.Errorf("received %s before the interrupt; passed it on and let go: %w", unix.SignalName(ws.StopSignal()), errSignalFirst),
			t.detach(ws.StopSignal()))
	default:
		t.seized = false
		return fmt.Errorf("exited (wait status %#x)", uint32(ws))
	}
	if err := unix.PtraceGetRegs(t.tid, &t.saved); err != nil {
		return errors.Join(fmt.Errorf("ptrace getregs: %w", err), t.detach(0))
	}
	return nil
}

// syscall makes the thread execute system call nr with args through the
// syscall instruction and returns the result (negative: -errno).
func (t *tracee) syscall(nr uint64, args ...uint64) (int64, error) {
	if !t.modified {
		// Kill the target rather than let it run on with our registers if
		// this process dies before release.
		opts := unix.PTRACE_O_EXITKILL
		if t.seccomp {
			// Until the detach; only asked for where needed (it takes
			// CAP_SYS_ADMIN).
			opts |= unix.PTRACE_O_SUSPEND_SECCOMP
		}
		if err := unix.PtraceSetOptions(t.tid, opts); err != nil {
			if t.seccomp {
				return 0, fmt.Errorf("suspending its filter: ptrace setoptions: %w (%w)", err, ErrSeccomp)
			}
			return 0, fmt.Errorf("ptrace setoptions: %w", err)
		}
	}
	regs := t.saved
	regs.Rip = t.insn
	regs.Rax = nr
	// orig_rax -1: not in a system call, so that the kernel applies no
	// restart logic to these registers on the way back to user mode.
	regs.Orig_rax = ^uint64(0)
	var a [6]uint64
	copy(a[:], args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	t.modified = true
	if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("ptrace setregs: %w", err)
	}
	until := time.Now().Add(stepTimeout)
	for {
		if err := unix.PtraceSingleStep(t.tid); err != nil {
			return 0, fmt.Errorf("ptrace singlestep: %w", err)
		}
		ws, err := t.wait(nil, until)
		if err != nil {
			return 0, err
		}
		if !ws.Stopped() {
			t.seized = false
			return 0, fmt.Errorf("exited (wait status %#x)", uint32(ws))
		}
		sig := ws.StopSignal()
		if ptraceEvent(ws) == 0 && sig == unix.SIGTRAP {
			if err := unix.PtraceGetRegs(t.tid, &regs); err != nil {
				return 0, fmt.Errorf("ptrace getregs: %w", err)
			}
			if regs.Rip == t.insn+2 {
				return int64(regs.Rax), nil
			}
		}
		if ptraceEvent(ws) == 0 {
			// A signal-delivery-stop: hold the signal back (delivering it
			// now would run its handler on our registers).
			if err := t.hold(sig); err != nil {
				return 0, err
			}
		}
		// Event stops (e.g. a group-stop) are stepped through too.
	}
}

// hold records the signal of the current signal-delivery-stop, to pass it
// on at release. A standard signal that is held already is not recorded
// twice: the kernel would not have queued it twice either.
func (t *tracee) hold(sig unix.Signal) error {
	if sig < sigRTMin {
		for _, p := range t.signals {
			if p.sig == sig {
				return nil
			}
		}
	}
	p := pendingSignal{sig: sig}
	if err := ptraceGetSiginfo(t.tid, &p.info); err != nil {
		return fmt.Errorf("ptrace getsiginfo: %w", err)
	}
	t.signals = append(t.signals, p)
	return nil
}

// release restores the saved registers, passes on the signals held back
// and detaches. It is a no-op if the thread is no longer seized.
func (t *tracee) release() error {
	if !t.seized {
		return nil
	}
	var errs []error
	if t.modified {
		regs := restartRegs(t.saved)
		if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
			errs = append(errs, fmt.Errorf("restore registers: %w", err))
		}
		if err := unix.PtraceSetOptions(t.tid, 0); err != nil {
			errs = append(errs, fmt.Errorf("ptrace setoptions: %w", err))
		}
	}
	var sig unix.Signal
	if len(t.signals) > 0 {
		// Delivered from the current stop with its original siginfo.
		if err := ptraceSetSiginfo(t.tid, &t.signals[0].info); err == nil {
			sig = t.signals[0].sig
		} else {
			errs = append(errs, fmt.Errorf("ptrace setsiginfo: %w", err))
		}
	}
	if err := t.detach(sig); err != nil {
		errs = append(errs, err)
	}
	// Any further ones are queued again (without their siginfo).
	for i, p := range t.signals {
		if i == 0 && sig != 0 {
			continue
		}
		if err := unix.Tgkill(t.tid, t.tid, p.sig); err != nil {
			errs = append(errs, fmt.Errorf("pass %s on: %w", unix.SignalName(p.sig), err))
		}
	}
	return errors.Join(errs...)
}

func (t *tracee) detach(sig unix.Signal) error {
	t.seized = false
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(t.tid), 0, uintptr(sig), 0, 0)
	if errno != 0 {
		return fmt.Errorf("ptrace detach: %w", errno)
	}
	return nil
}

// wait waits for the next stop (or exit) of the thread, until done is
// closed or the deadline (zero: none) passes. It polls, as a blocking
// wait4 cannot be interrupted.
func (t *tracee) wait(done <-chan struct{}, until time.Time) (unix.WaitStatus, error) {
	delay := 5 * time.Microsecond
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(t.tid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 0, fmt.Errorf("wait4: %w", err)
		}
		if pid == t.tid {
			return ws, nil
		}
		select {
		case <-done:
			return 0, errors.New("cancelled")
		default:
		}
		if !until.IsZero() && time.Now().After(until) {
			return 0, errors.New("timed out")
		}
		time.Sleep(delay)
		if delay < time.Millisecond {
			delay *= 2
		}
	}
}

// restartRegs returns the registers to restore: saved, with the restart of
// an interrupted system call done the way the kernel would have done it on
// the way back to user mode (arch_do_signal_or_restart without a handler),
// and orig_rax -1 so that it is not done a second time.
func restartRegs(saved unix.PtraceRegs) unix.PtraceRegs {
	regs := saved
	if int64(saved.Orig_rax) >= 0 {
		switch -int64(saved.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand:
			regs.Rax = saved.Orig_rax
			regs.Rip -= 2
		case errRestartRestartBlock:
			regs.Rax = sysRestartSyscall
			regs.Rip -= 2
		}
	}
	regs.Orig_rax = ^uint64(0)
	return regs
}

// ptraceEvent returns the PTRACE_EVENT_* of a stop (status >> 16), 0 for a
// signal-delivery-stop.
func ptraceEvent(ws unix.WaitStatus) int { return int(uint32(ws)>>16) & 0xff }

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func ptraceGetSiginfo(tid int, info *[128]byte) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(info)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func ptraceSetSiginfo(tid int, info *[128]byte) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(info)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
