// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build amd64 && measure

package memtrack

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of this file work on a process the caller names, so they are
// built only with the build tag measure and never run by make unit:
//
//	RRC_MEMTRACK_PID=PID go test -tags measure ./runtime/memtrack -run 'TestMeasurePid|TestVerifyPid' -v

// measuredPid is the process named by RRC_MEMTRACK_PID.
func measuredPid(t *testing.T) int {
	t.Helper()
	pid, err := strconv.Atoi(os.Getenv("RRC_MEMTRACK_PID"))
	if err != nil {
		t.Fatalf("RRC_MEMTRACK_PID: %v (the pid of the process to measure)", err)
	}
	return pid
}

// TestMeasurePid measures Take, Attach, Register and Reset on an existing
// process, e.g. a loaded redis-server. The process is tracked for a second
// and let go.
func TestMeasurePid(t *testing.T) {
	pid := measuredPid(t)
	start := time.Now()
	f := take(t, pid)
	dTake := time.Since(start)
	start = time.Now()
	tr, err := Attach(pid, f)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	dAttach := time.Since(start)
	start = time.Now()
	w, err := tr.Written()
	if err != nil {
		t.Fatal(err)
	}
	dWritten := time.Since(start)
	var all uint64
	for _, r := range w {
		all += r.Pages()
	}
	start = time.Now()
	first := reset(t, tr)
	t.Logf("Take %v, Attach %v, Written %v (%d ranges, %d pages), first Reset %v (%d pages)",
		dTake, dAttach, dWritten, len(w), all, time.Since(start), first)
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		start = time.Now()
		n, err := tr.Register()
		if err != nil {
			t.Fatal(err)
		}
		dReg := time.Since(start)
		start = time.Now()
		w, err := tr.Written()
		if err != nil {
			t.Fatal(err)
		}
		dWritten := time.Since(start)
		start = time.Now()
		pages := reset(t, tr)
		t.Logf("after 100 ms: Register %v (%d new), Written %v (%d ranges), Reset %v (%d pages)",
			dReg, n, dWritten, len(w), time.Since(start), pages)
	}
}

// TestVerifyPid checks on an existing process (RRC_MEMTRACK_PID, as for
// TestMeasurePid; it is stopped with SIGSTOP for a few milliseconds at a
// time) that no page changes without being reported: it copies the present
// pages of the registered mappings, resets, lets the process run, stops it
// again and compares.
func TestVerifyPid(t *testing.T) {
	pid := measuredPid(t)
	tr, err := Attach(pid, take(t, pid))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	stopProcess(t, pid)
	defer unix.Kill(pid, unix.SIGCONT)
	before := snapshot(t, tr, mem)
	reset(t, tr)
	for round := range 5 {
		unix.Kill(pid, unix.SIGCONT)
		time.Sleep(100 * time.Millisecond)
		stopProcess(t, pid)
		w, err := tr.Written()
		if err != nil {
			t.Fatal(err)
		}
		after := snapshot(t, tr, mem)
		changed, unreported := 0, 0
		for a, b := range after {
			if old, ok := before[a]; ok && old == b {
				continue
			}
			changed++
			if len(pagesIn(w, a, 1)) == 0 {
				unreported++
				if unreported <= 5 {
					t.Errorf("round %d: page %#x changed but not reported written", round, a)
				}
			}
		}
		pages := reset(t, tr)
		t.Logf("round %d: %d registered pages present, %d changed, %d reported by Reset, %d unreported",
			round, len(after), changed, pages, unreported)
		before = after
	}
}

// stopProcess stops pid with SIGSTOP and waits until all its threads are
// stopped.
func stopProcess(t *testing.T, pid int) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		all := len(tasks) > 0
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				all = false
			}
		}
		if all {
			return
		}
		if i == 5000 {
			t.Fatal("process not stopped")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// snapshot returns the content of the present pages (not the zero page) of
// the registered mappings, by address.
func snapshot(t *testing.T, tr *Tracker, mem *os.File) map[uint64][pageSize]byte {
	t.Helper()
	out := make(map[uint64][pageSize]byte)
	var ranges []Range
	q := scanQuery{mask: pageIsWPAllowed | pageIsPresent | pageIsPFNZero, inverted: pageIsPFNZero, ret: pageIsPresent}
	err := pagemapScanAll(tr.pagemap.Fd(), 0, scanEnd, q, make([]pageRegion, 512), func(r pageRegion) bool {
		ranges = append(ranges, Range{r.Start, r.End})
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		buf := make([]byte, r.End-r.Start)
		if _, err := mem.ReadAt(buf, int64(r.Start)); err != nil {
			t.Fatalf("read %#x-%#x: %v", r.Start, r.End, err)
		}
		for off := uint64(0); off < uint64(len(buf)); off += pageSize {
			out[r.Start+off] = [pageSize]byte(buf[off : off+pageSize])
		}
	}
	return out
}
