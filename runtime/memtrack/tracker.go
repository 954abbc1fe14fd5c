// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrProcessChanged is wrapped by the errors of a Tracker whose process
// exited, exec'd (its address space was replaced) or whose pid now belongs
// to another process. The Tracker is of no further use: Close it.
var ErrProcessChanged = errors.New("tracked process exited or replaced its address space")

// pageSize is the base page size (x86_64 and the usual arm64 kernels).
const pageSize = 4096

// scanBufLen is the number of regions one PAGEMAP_SCAN call can return
// (24 bytes each); the scan is repeated when there are more.
const scanBufLen = 512

// Range is a range of virtual addresses [Start, End), page-aligned.
type Range struct{ Start, End uint64 }

// Pages returns the number of pages in r.
func (r Range) Pages() uint64 { return (r.End - r.Start) / pageSize }

// Tracker tracks the pages written by one process (one address space)
// through a userfaultfd made in it (Take). Its methods may be called from
// several goroutines.
type Tracker struct {
	pid int
	log *slog.Logger

	mu        sync.Mutex
	uffd      *os.File
	pagemap   *os.File // opened at Attach: refers to the address space of that time
	startTime uint64   // /proc/PID/stat field 22 at Attach
	buf       []pageRegion
	closed    bool
}

// Attach starts tracking pid's writes with uffd, a userfaultfd made in pid's
// address space (Take): it enables asynchronous write-protection on uffd
// (UFFDIO_API with WP_ASYNC and WP_UNPOPULATED; a userfaultfd accepts that
// once), opens /proc/PID/pagemap and registers pid's private mappings. Every page counts as written until the first Reset.
//
// The Tracker owns uffd from then on, also when Attach fails (it is closed).
func Attach(pid int, uffd *os.File) (_ *Tracker, err error) {
	if uffd == nil {
		return nil, fmt.Errorf("attach to %d: no userfaultfd", pid)
	}
	t := &Tracker{pid: pid, uffd: uffd, log: slog.Default(), buf: make([]pageRegion, scanBufLen)}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.startTime, err = readStartTime(pid); err != nil {
		return nil, fmt.Errorf("attach to %d: %w", pid, err)
	}
	api := uffdioAPIArg{API: uffdAPI, Features: uffdFeatureWPAsync | uffdFeatureWPUnpopulated}
	if _, err := ioctlPtr(uffd.Fd(), uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return nil, fmt.Errorf("attach to %d: enable userfaultfd write-protect (UFFDIO_API): %w", pid, err)
	}
	if t.pagemap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
		return nil, fmt.Errorf("attach to %d: %w", pid, notExistChanged(err))
	}
	n, vanished, err := t.register()
	if err != nil {
		return nil, fmt.Errorf("attach to %d: %w", pid, err)
	}
	// The userfaultfd was made before the pagemap was opened: if the
	// process exec'd in between they belong to different address spaces.
	// Registering through a userfaultfd whose address space is gone fails
	// with ENOMEM, as for a mapping that is gone; and what was registered
	// shows in the pagemap only if it is the same address space.
	if n == 0 && vanished > 0 {
		return nil, fmt.Errorf("attach to %d: the userfaultfd belongs to an address space that is gone: %w", pid, ErrProcessChanged)
	}
	if n > 0 {
		q := scanQuery{mask: pageIsWPAllowed, ret: pageIsWPAllowed}
		found, err := pagemapScanAny(t.pagemap.Fd(), 0, scanEnd, q)
		if err != nil {
			return nil, fmt.Errorf("attach to %d: scan for registered mappings: %w", pid, scanErr(err))
		}
		if !found {
			return nil, fmt.Errorf("attach to %d: the userfaultfd belongs to another address space: %w", pid, ErrProcessChanged)
		}
	}
	return t, nil
}

// SetLogger sets where the Tracker logs (debug messages about mappings it
// could not register); the default is slog.Default.
func (t *Tracker) SetLogger(l *slog.Logger) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log = l
}

// Pid returns the tracked process.
func (t *Tracker) Pid() int { return t.pid }

// Register registers the private mappings that appeared since
// Attach or the last Register (new mappings, and mappings moved by mremap,
// which drops their registration), and returns how many it registered. Call
// it between checkpoints, with the process running: each registration takes
// the process's mmap lock for writing. Until the next Reset the new
// mappings' pages count as written.
func (t *Tracker) Register() (n int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, fmt.Errorf("register mappings of %d: %w", t.pid, os.ErrClosed)
	}
	if err := t.checkIdentity(); err != nil {
		return 0, fmt.Errorf("register mappings of %d: %w", t.pid, err)
	}
	n, _, err = t.register()
	if err != nil {
		return n, fmt.Errorf("register mappings of %d: %w", t.pid, err)
	}
	return n, nil
}

// register registers the trackable mappings that are not yet registered
// with write-protection, and returns how many it registered and how many
// failed with ENOMEM (gone). It does not hold t.mu itself.
func (t *Tracker) register() (n, vanished int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", t.pid))
	if err != nil {
		return 0, 0, notExistChanged(err)
	}
	maps, err := parseMaps(bytes.NewReader(b))
	if err != nil {
		return 0, 0, err
	}
	// The parts of the trackable mappings (in the address space of the
	// pagemap, i.e. the tracked one) that are not registered for
	// asynchronous write-protection. Registering only those keeps the mmap
	// write lock, which stalls the process's page faults, for the mappings
	// that need it. The scan is limited to the trackable mappings: walking
	// the page tables of the shared ones (never registered) would be waste.
	var unreg []Range
	q := scanQuery{inverted: pageIsWPAllowed, mask: pageIsWPAllowed, ret: pageIsWPAllowed}
	for _, run := range trackableRuns(maps) {
		err = pagemapScanAll(t.pagemap.Fd(), run.Start, run.End, q, t.buf, func(r pageRegion) bool {
			unreg = append(unreg, Range{r.Start, r.End})
			return true
		})
		if err != nil {
			return 0, 0, fmt.Errorf("scan for unregistered mappings: %w", scanErr(err))
		}
	}
	i := 0
	for _, m := range maps {
		if !m.trackable() {
			continue
		}
		for i < len(unreg) && unreg[i].End <= m.Start {
			i++
		}
		if i == len(unreg) {
			break
		}
		if unreg[i].Start >= m.End {
			continue // registered already
		}
		reg := uffdioRegisterArg{Start: m.Start, Len: m.End - m.Start, Mode: uffdioRegisterModeWP}
		_, err := ioctlPtr(t.uffd.Fd(), uffdioRegister, unsafe.Pointer(&reg))
		switch {
		case err == nil:
			n++
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EPERM):
			// A mapping that cannot be write-protected (e.g. VM_PFNMAP, or
			// changed since maps was read): its pages count as written.
			t.log.Debug("cannot register mapping for write tracking", "pid", t.pid,
				"start", fmt.Sprintf("%#x", m.Start), "end", fmt.Sprintf("%#x", m.End), "perms", m.Perms, "path", m.Path, "err", err)
		case errors.Is(err, unix.ENOMEM):
			// No mapping there any more, or the address space is gone
			// (checked below).
			vanished++
		default:
			return n, vanished, fmt.Errorf("register %#x-%#x %s %q (UFFDIO_REGISTER): %w", m.Start, m.End, m.Perms, m.Path, err)
		}
	}
	if vanished > 0 || n > 0 {
		if err := t.checkIdentity(); err != nil {
			return n, vanished, err
		}
	}
	return n, vanished, nil
}

// Reset write-protects the pages written since the last Reset (or since
// Attach or Register, for the first one) and returns how many there were.
// Call it while the process is frozen, right after a successful dump: a
// write between the dump and the Reset would be lost to the next one.
func (t *Tracker) Reset() (pages uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, fmt.Errorf("reset write tracking of %d: %w", t.pid, os.ErrClosed)
	}
	// Pages present or swapped only: write-protecting a hole would put a
	// marker in it, which the pagemap then reports as a swapped page.
	// PM_SCAN_WP_MATCHING without PM_SCAN_CHECK_WPASYNC skips the mappings
	// that are not registered.
	q := scanQuery{flags: pmScanWPMatching, mask: pageIsWritten, anyof: pageIsPresent | pageIsSwapped, ret: pageIsWritten}
	err = pagemapScanAll(t.pagemap.Fd(), 0, scanEnd, q, t.buf, func(r pageRegion) bool {
		pages += (r.End - r.Start) / pageSize
		return true
	})
	if err != nil {
		return pages, fmt.Errorf("reset write tracking of %d (PAGEMAP_SCAN): %w", t.pid, scanErr(err))
	}
	if err := t.checkAlive(); err != nil {
		return pages, fmt.Errorf("reset write tracking of %d: %w", t.pid, err)
	}
	return pages, nil
}

// Written returns the ranges of pages written since the last Reset, without
// resetting, in address order. Pages of mappings that are not registered
// (files, mappings made since the last Register) count as written when they
// are present.
func (t *Tracker) Written() ([]Range, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("read written pages of %d: %w", t.pid, os.ErrClosed)
	}
	var out []Range
	q := scanQuery{mask: pageIsWritten, anyof: pageIsPresent | pageIsSwapped, ret: pageIsWritten}
	err := pagemapScanAll(t.pagemap.Fd(), 0, scanEnd, q, t.buf, func(r pageRegion) bool {
		out = append(out, Range{r.Start, r.End})
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read written pages of %d (PAGEMAP_SCAN): %w", t.pid, scanErr(err))
	}
	if err := t.checkAlive(); err != nil {
		return nil, fmt.Errorf("read written pages of %d: %w", t.pid, err)
	}
	return out, nil
}

// Close closes the userfaultfd, which ends the tracking (the kernel
// unregisters the mappings), and the pagemap.
func (t *Tracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.uffd != nil {
		errs = append(errs, t.uffd.Close())
	}
	if t.pagemap != nil {
		errs = append(errs, t.pagemap.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close write tracking of %d: %w", t.pid, err)
	}
	return nil
}

// checkIdentity checks that pid is still the process attached to, with the
// same address space.
func (t *Tracker) checkIdentity() error {
	st, err := readStartTime(t.pid)
	if err != nil {
		return err
	}
	if st != t.startTime {
		return fmt.Errorf("pid %d now belongs to another process (start time %d, was %d): %w", t.pid, st, t.startTime, ErrProcessChanged)
	}
	return t.checkAlive()
}

// checkAlive checks that the address space of the Attach time is still in
// use. The pagemap file holds a reference to it (not a user count): once the
// process has exited or exec'd, the kernel tears that address space down
// and reads of the file return end of file. This is also what makes a
// re-exec detectable, which neither the pid nor the start time show. (A
// process sharing the address space through clone(CLONE_VM) without
// CLONE_THREAD, e.g. a vfork child that has not exec'd yet, keeps it alive:
// an exec of the tracked process goes unnoticed until that one lets go.)
func (t *Tracker) checkAlive() error {
	var b [8]byte
	n, err := unix.Pread(int(t.pagemap.Fd()), b[:], 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("address space of %d is gone: %w", t.pid, ErrProcessChanged)
	case err != nil:
		return fmt.Errorf("read pagemap of %d: %w", t.pid, err)
	case n == 0:
		return fmt.Errorf("address space of %d is gone: %w", t.pid, ErrProcessChanged)
	}
	return nil
}

// readStartTime returns field 22 of /proc/PID/stat (the start time in clock
// ticks since boot), which tells a reused pid apart.
func readStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, notExistChanged(err)
	}
	return parseStartTime(b)
}

// parseStartTime extracts the start time from the content of /proc/PID/stat.
// The command name (field 2) is in parentheses and may itself contain
// spaces and parentheses, so fields are counted from the last ')'.
func parseStartTime(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat %q: no ')'", b)
	}
	fields := bytes.Fields(b[i+1:])
	const idx = 22 - 3 // fields after the name start with field 3 (state)
	if len(fields) <= idx {
		return 0, fmt.Errorf("parse stat: %d fields after the name, want more than %d", len(fields), idx)
	}
	v, err := strconv.ParseUint(string(fields[idx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat start time: %w", err)
	}
	return v, nil
}

// scanErr turns the error of a PAGEMAP_SCAN on an address space that is
// gone (ESRCH) into ErrProcessChanged.
func scanErr(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: %w", err, ErrProcessChanged)
	}
	return err
}

// notExistChanged turns "no such file" under /proc/PID (the process is
// gone) into ErrProcessChanged.
func notExistChanged(err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: %w", err, ErrProcessChanged)
	}
	return err
}

// PageRun is a run of pages CRIU would dump, alike in whether each must be
// copied now.
type PageRun struct {
	Range
	// Changed: written since the last Reset, not write-tracked, or
	// swapped out (CRIU's dirty pages, as criu-written.so reports them);
	// otherwise the page is as it was at the last Reset.
	Changed bool
}

// Dumpable calls fn, in address order, with the runs of pages in
// [start, end) that CRIU dumps of a private mapping: present or swapped,
// neither the zero page nor the page cache's (CRIU's own PAGEMAP_SCAN
// query). Call it while the process is stopped.
func (t *Tracker) Dumpable(start, end uint64, fn func(PageRun)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("read dumpable pages of %d: %w", t.pid, os.ErrClosed)
	}
	q := scanQuery{
		inverted: pageIsPFNZero | pageIsFile, mask: pageIsPFNZero | pageIsFile,
		anyof: pageIsPresent | pageIsSwapped,
		ret:   pageIsPresent | pageIsWritten | pageIsWPAllowed,
	}
	err := pagemapScanAll(t.pagemap.Fd(), start, end, q, t.buf, func(r pageRegion) bool {
		c := r.Categories
		fn(PageRun{Range{r.Start, r.End}, c&pageIsWritten != 0 || c&pageIsWPAllowed == 0 || c&pageIsPresent == 0})
		return true
	})
	if err != nil {
		return fmt.Errorf("read dumpable pages of %d (PAGEMAP_SCAN): %w", t.pid, scanErr(err))
	}
	if err := t.checkAlive(); err != nil {
		return fmt.Errorf("read dumpable pages of %d: %w", t.pid, err)
	}
	return nil
}
