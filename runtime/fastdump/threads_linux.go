// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Stopped is a set of threads this OS thread has seized and interrupted.
// All its methods must be called from the OS thread that called Seize
// (runtime.LockOSThread): ptrace requests come from the tracer thread only.
type Stopped struct {
	tids    []int
	stopped map[int]bool
}

// Seize attaches to every thread in tids without stopping them
// (PTRACE_SEIZE) and asks each to stop (PTRACE_INTERRUPT). A thread in a
// frozen cgroup stops when the cgroup thaws. On error the threads seized so
// far are let go.
func Seize(tids []int) (*Stopped, error) {
	s := &Stopped{stopped: make(map[int]bool, len(tids))}
	for _, tid := range tids {
		if err := unix.PtraceSeize(tid); err != nil {
			return nil, errors.Join(fmt.Errorf("seize thread %d: %w", tid, err), s.Detach())
		}
		s.tids = append(s.tids, tid)
		if err := unix.PtraceInterrupt(tid); err != nil {
			return nil, errors.Join(fmt.Errorf("interrupt thread %d: %w", tid, err), s.Detach())
		}
	}
	return s, nil
}

// Threads returns the seized threads, in the order given to Seize.
func (s *Stopped) Threads() []int { return s.tids }

// maxSignalsFirst bounds the signals passed on to one thread before its
// interrupt stop; each is delivered (its handler frame set up, as CRIU's
// seize does too) and the interrupt stop follows.
const maxSignalsFirst = 64

// Wait waits until every thread is in its interrupt stop, passing on the
// signals that arrive first. A thread that exits fails the wait.
func (s *Stopped) Wait(timeout time.Duration) error {
	until := time.Now().Add(timeout)
	for _, tid := range s.tids {
		for n := 0; !s.stopped[tid]; n++ {
			if n > maxSignalsFirst {
				return fmt.Errorf("thread %d: %d signals and still no interrupt stop", tid, n)
			}
			ws, err := waitThread(tid, until)
			if err != nil {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			switch {
			case ws.Stopped() && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP:
				s.stopped[tid] = true
			case ws.Stopped():
				if err := unix.PtraceCont(tid, int(ws.StopSignal())); err != nil {
					return fmt.Errorf("thread %d: pass on %s: %w", tid, unix.SignalName(ws.StopSignal()), err)
				}
			default:
				return fmt.Errorf("thread %d exited (wait status %#x)", tid, uint32(ws))
			}
		}
	}
	return nil
}

// waitThread polls for a state change of tid until the deadline: a thread
// frozen by its cgroup has none to report yet. A running thread stops
// within microseconds, so the first polls only yield the processor; Go's
// sleeps are far coarser.
func waitThread(tid int, until time.Time) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	delay := 20 * time.Microsecond
	for i := 0; ; i++ {
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return ws, fmt.Errorf("wait: %w", err)
		}
		if pid == tid {
			return ws, nil
		}
		if time.Now().After(until) {
			return ws, errors.New("no stop before the deadline")
		}
		if i < 200 {
			runtime.Gosched()
			continue
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Millisecond)
	}
}

// ptraceEvent returns the PTRACE_EVENT_* of a stop (status >> 16), 0 for a
// signal-delivery-stop.
func ptraceEvent(ws unix.WaitStatus) int { return int(uint32(ws)>>16) & 0xff }

// Detach lets every seized thread go; a thread that has exited meanwhile
// is no error.
func (s *Stopped) Detach() error {
	var errs []error
	for _, tid := range s.tids {
		if err := unix.PtraceDetach(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("detach thread %d: %w", tid, err))
		}
	}
	s.tids = nil
	return errors.Join(errs...)
}
