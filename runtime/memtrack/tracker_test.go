// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build amd64

package memtrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/prereq"
)

// pagesIn returns the indexes of the pages of [base, base+n pages) that
// ranges cover.
func pagesIn(ranges []Range, base uint64, n int) []int {
	var out []int
	for i := range n {
		a := base + uint64(i)*pageSize
		for _, r := range ranges {
			if r.Start <= a && a < r.End {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func allPages(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func written(t *testing.T, tr *Tracker, base uint64, n int) []int {
	t.Helper()
	w, err := tr.Written()
	if err != nil {
		t.Fatal(err)
	}
	return pagesIn(w, base, n)
}

func reset(t *testing.T, tr *Tracker) uint64 {
	t.Helper()
	n, err := tr.Reset()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func checkWritten(t *testing.T, tr *Tracker, base uint64, n int, want []int, what string) {
	t.Helper()
	if got := written(t, tr, base, n); !slices.Equal(got, want) {
		t.Fatalf("%s: written pages %v, want %v", what, abbrev(got), abbrev(want))
	}
}

func abbrev(p []int) string {
	if len(p) > 12 {
		return fmt.Sprintf("%v…(%d pages)", p[:12], len(p))
	}
	return fmt.Sprint(p)
}

func parseHex(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWritten: after a Reset, exactly the pages written since show; a Reset
// clears them.
func TestWritten(t *testing.T) {
	c := startChild(t, "plain")
	tr := c.attach()
	checkWritten(t, tr, c.base, childPages, allPages(childPages), "before the first Reset")
	if n := reset(t, tr); n < childPages {
		t.Fatalf("first Reset write-protected %d pages, want at least the region's %d", n, childPages)
	}
	checkWritten(t, tr, c.base, childPages, nil, "after the first Reset")

	for _, tc := range []struct {
		name string
		cmds []string
		want []int
	}{
		{"three pages", []string{"write 3", "write 17", "write 200"}, []int{3, 17, 200}},
		{"nothing", nil, nil},
		{"one page again", []string{"write 17"}, []int{17}},
		{"same page twice", []string{"write 40", "write 40"}, []int{40}},
		{"reads only", []string{"read 50", "read 51"}, nil},
		{"first and last", []string{"write 0", "write 255"}, []int{0, 255}},
		{"fork only", []string{"fork"}, nil},
		{"write after fork", []string{"fork", "write 5"}, []int{5}},
		{"write after zap", []string{"dontneed 60", "write 60"}, []int{60}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			reset(t, tr)
			c.do(tc.cmds...)
			checkWritten(t, tr, c.base, childPages, tc.want, "after "+strings.Join(tc.cmds, ", "))
			// Written does not reset.
			checkWritten(t, tr, c.base, childPages, tc.want, "read again")
			if n := reset(t, tr); n < uint64(len(tc.want)) {
				t.Errorf("Reset counted %d pages, want at least %d", n, len(tc.want))
			}
			checkWritten(t, tr, c.base, childPages, nil, "after Reset")
		})
	}
}

// TestZappedPages: a page dropped with MADV_DONTNEED and then read or written
// is never seen as a clean page (present with its old content, or swapped
// and not written: a uffd-wp marker).
func TestZappedPages(t *testing.T) {
	c := startChild(t, "plain")
	tr := c.attach()
	reset(t, tr)
	const zappedRead, zappedWritten, zappedOnly, untouched = 10, 11, 12, 13
	c.do(fmt.Sprintf("dontneed %d", zappedRead), fmt.Sprintf("read %d", zappedRead),
		fmt.Sprintf("dontneed %d", zappedWritten), fmt.Sprintf("write %d", zappedWritten),
		fmt.Sprintf("dontneed %d", zappedOnly))
	w := written(t, tr, c.base, childPages)
	if !slices.Contains(w, zappedWritten) {
		t.Errorf("page zapped then written not reported (written: %v)", w)
	}
	cats := pageCategories(t, tr, c.base, childPages)
	for _, p := range []int{zappedRead, zappedWritten, zappedOnly} {
		cat := cats[p]
		t.Logf("page %d: categories %s, reported written %v", p, catString(cat), slices.Contains(w, p))
		stale := cat&pageIsPresent != 0 && cat&pageIsPFNZero == 0 || cat&pageIsSwapped != 0
		if stale && !slices.Contains(w, p) {
			t.Errorf("page %d changed since the Reset but reads as clean: %s", p, catString(cat))
		}
	}
	if cat := cats[untouched]; cat&pageIsPresent == 0 || cat&pageIsWritten != 0 {
		t.Errorf("untouched page %d: %s, want present and not written", untouched, catString(cat))
	}
	// No page of the region turned into a swapped one (a marker in a hole).
	for p, cat := range cats {
		if cat&pageIsSwapped != 0 {
			t.Errorf("page %d reads as swapped: %s", p, catString(cat))
		}
	}
}

// pageCategories returns the pagemap categories of each page of the region.
func pageCategories(t *testing.T, tr *Tracker, base uint64, n int) []uint64 {
	t.Helper()
	cats := make([]uint64, n)
	all := uint64(pageIsWPAllowed | pageIsWritten | pageIsFile | pageIsPresent | pageIsSwapped | pageIsPFNZero | pageIsHuge)
	q := scanQuery{anyof: all, ret: all}
	err := pagemapScanAll(tr.pagemap.Fd(), base, base+uint64(n)*pageSize, q, make([]pageRegion, 64), func(r pageRegion) bool {
		for a := r.Start; a < r.End; a += pageSize {
			cats[(a-base)/pageSize] = r.Categories
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return cats
}

func catString(c uint64) string {
	var s []string
	for _, x := range []struct {
		bit  uint64
		name string
	}{{pageIsWPAllowed, "wp-allowed"}, {pageIsWritten, "written"}, {pageIsFile, "file"}, {pageIsPresent, "present"},
		{pageIsSwapped, "swapped"}, {pageIsPFNZero, "pfn-zero"}, {pageIsHuge, "huge"}} {
		if c&x.bit != 0 {
			s = append(s, x.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "|")
}

// TestNewMappings: a mapping made after Attach, or moved by mremap (which
// drops the registration), counts as written until Register and Reset, and
// is tracked like the rest after.
func TestNewMappings(t *testing.T) {
	c := startChild(t, "plain")
	tr := c.attach()
	reset(t, tr)

	for _, tc := range []struct {
		name  string
		cmd   string
		pages int
		addr  func(reply string) uint64
	}{
		{"mmap", "mmap 64", 64, func(r string) uint64 { return parseHex(t, strings.Fields(r)[1]) }},
		{"mremap", "mremap", childPages, func(r string) uint64 { return parseHex(t, r) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			reply := c.do(tc.cmd)
			base := tc.addr(reply)
			all := allPages(tc.pages)
			checkWritten(t, tr, base, tc.pages, all, "new mapping")
			reset(t, tr)
			checkWritten(t, tr, base, tc.pages, all, "new mapping not registered, after Reset")
			n, err := tr.Register()
			if err != nil {
				t.Fatal(err)
			}
			if n < 1 {
				t.Fatalf("Register registered %d mappings, want at least 1", n)
			}
			checkWritten(t, tr, base, tc.pages, all, "registered, before Reset")
			reset(t, tr)
			checkWritten(t, tr, base, tc.pages, nil, "registered, after Reset")
			region := ""
			if tc.name == "mmap" {
				region = " " + strings.Fields(reply)[0]
			}
			c.do("write 7" + region)
			checkWritten(t, tr, base, tc.pages, []int{7}, "after a write")
		})
	}
	// Nothing new: nothing to register.
	if n, err := tr.Register(); err != nil || n != 0 {
		t.Fatalf("Register with no new mapping = %d, %v; want 0, nil", n, err)
	}
}

// TestTakeLeavesTargetIntact: the injection interrupts the child in a
// blocking read, in a sleep and running in user space; each resumes as if
// nothing happened, and the child keeps no userfaultfd.
func TestTakeLeavesTargetIntact(t *testing.T) {
	const sysRead, sysNanosleep, sysClockNanosleep = 0, 35, 230
	t.Run("blocked in read", func(t *testing.T) {
		c := startChild(t, "plain")
		c.waitSyscall(sysRead)
		f := take(t, c.pid)
		defer f.Close()
		if n := c.uffdCount(); n != 0 {
			t.Fatalf("child has %d userfaultfds open", n)
		}
		// The read is restarted: the next command arrives whole.
		c.do("write 1", "read 1")
	})
	t.Run("in nanosleep", func(t *testing.T) {
		c := startChild(t, "plain")
		const sleep = 700 * time.Millisecond
		c.send(fmt.Sprintf("sleep %d", sleep.Milliseconds()))
		c.waitSyscall(sysNanosleep, sysClockNanosleep)
		f := take(t, c.pid)
		defer f.Close()
		f2 := take(t, c.pid) // twice: once more in restart_syscall
		defer f2.Close()
		fields := strings.Fields(c.reply("sleep"))
		elapsed, _ := strconv.ParseInt(fields[0], 10, 64)
		if errno := fields[1]; errno != "0" {
			t.Fatalf("nanosleep failed with errno %s after %v", errno, time.Duration(elapsed))
		}
		if d := time.Duration(elapsed); d < sleep || d > sleep+300*time.Millisecond {
			t.Fatalf("nanosleep of %v took %v", sleep, d)
		}
		if n := c.uffdCount(); n != 0 {
			t.Fatalf("child has %d userfaultfds open", n)
		}
		c.do("write 1")
	})
	t.Run("running", func(t *testing.T) {
		c := startChild(t, "plain")
		c.send("spin 300")
		time.Sleep(50 * time.Millisecond)
		f := take(t, c.pid)
		defer f.Close()
		c.reply("spin")
		if n := c.uffdCount(); n != 0 {
			t.Fatalf("child has %d userfaultfds open", n)
		}
		c.do("write 1")
	})
}

// TestSeccompSuspended: a process with a seccomp filter, even one that
// kills it for userfaultfd(2), is tracked: its filter is suspended while the
// calls are injected, and it runs on under it.
func TestSeccompSuspended(t *testing.T) {
	for _, mode := range []string{"seccomp", "seccomp-kill-uffd"} {
		t.Run(mode, func(t *testing.T) {
			c := startChild(t, mode)
			tr, err := Attach(c.pid, take(t, c.pid))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			reset(t, tr)
			c.do("write 3", "read 1")
			checkWritten(t, tr, c.base, childPages, []int{3}, mode)
			if n := c.uffdCount(); n != 0 {
				t.Fatalf("child has %d userfaultfds open", n)
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid))
			if err != nil || !bytes.Contains(b, []byte("Seccomp:\t2")) {
				t.Fatalf("child's seccomp mode after the injection: %v\n%s", err, b)
			}
		})
	}
}

// TestReattach: after Close, a new userfaultfd can track the same process
// (the kernel unregistered the mappings; no EBUSY).
func TestReattach(t *testing.T) {
	c := startChild(t, "plain")
	for i := range 3 {
		tr, err := Attach(c.pid, take(t, c.pid))
		if err != nil {
			t.Fatalf("attach #%d: %v", i+1, err)
		}
		reset(t, tr)
		c.do("write 4")
		checkWritten(t, tr, c.base, childPages, []int{4}, fmt.Sprintf("attach #%d", i+1))
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Reset(); err == nil {
			t.Fatal("Reset after Close succeeded")
		}
	}
}

// TestProcessChanged: a Tracker whose process exec'd or exited says so.
func TestProcessChanged(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(c *child)
	}{
		{"exec", func(c *child) { c.send("exec"); c.readyAddr() }},
		{"exit", func(c *child) { c.do("exit"); c.cmd.Wait() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startChild(t, "plain")
			tr := c.attach()
			reset(t, tr)
			tc.do(c)
			if _, err := tr.Register(); !errors.Is(err, ErrProcessChanged) {
				t.Errorf("Register: %v, want ErrProcessChanged", err)
			}
			if _, err := tr.Reset(); !errors.Is(err, ErrProcessChanged) {
				t.Errorf("Reset: %v, want ErrProcessChanged", err)
			}
			if _, err := tr.Written(); !errors.Is(err, ErrProcessChanged) {
				t.Errorf("Written: %v, want ErrProcessChanged", err)
			}
		})
	}
	t.Run("exec between Take and Attach", func(t *testing.T) {
		c := startChild(t, "plain")
		f := take(t, c.pid)
		c.send("exec")
		c.readyAddr()
		tr, err := Attach(c.pid, f)
		if !errors.Is(err, ErrProcessChanged) {
			if err == nil {
				tr.Close()
			}
			t.Fatalf("Attach with a userfaultfd of the old address space: %v, want ErrProcessChanged", err)
		}
	})
}

// TestCosts logs what the operations cost on the test child (run with -v).
func TestCosts(t *testing.T) {
	c := startChild(t, "plain")
	start := time.Now()
	f := take(t, c.pid)
	dTake := time.Since(start)
	start = time.Now()
	tr, err := Attach(c.pid, f)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	dAttach := time.Since(start)
	start = time.Now()
	first := reset(t, tr)
	dFirst := time.Since(start)
	for i := range 70 {
		c.do(fmt.Sprintf("write %d", i*3))
	}
	start = time.Now()
	pages := reset(t, tr)
	dReset := time.Since(start)
	start = time.Now()
	n, err := tr.Register()
	if err != nil {
		t.Fatal(err)
	}
	dRegister := time.Since(start)
	t.Logf("Take %v, Attach %v, first Reset %v (%d pages), Reset after 70 writes %v (%d pages), Register %v (%d new)",
		dTake, dAttach, dFirst, first, dReset, pages, dRegister, n)
}

// TestTakeUnderSignals: signals that arrive while the registers are
// injected are held back and passed on after the restore; the child (a Go
// program, which crashes on the slightest register corruption) keeps
// working. SIGURG is what the Go runtime uses for preemption: its handler
// ignores extra ones.
func TestTakeUnderSignals(t *testing.T) {
	for _, cmd := range []string{"", "spin 2000"} {
		name := cmd
		if name == "" {
			name = "blocked in read"
		}
		t.Run(name, func(t *testing.T) {
			c := startChild(t, "plain")
			if cmd != "" {
				c.send(cmd)
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					unix.Tgkill(c.pid, c.pid, unix.SIGURG)
					time.Sleep(20 * time.Microsecond)
				}
			}()
			defer func() { close(stop); <-done }()
			for range 15 {
				take(t, c.pid).Close()
			}
			if cmd != "" {
				c.reply(cmd)
			}
			c.do("write 1", "read 1")
			if n := c.uffdCount(); n != 0 {
				t.Fatalf("child has %d userfaultfds open", n)
			}
		})
	}
}

// TestTakeCancelFrozen: a frozen target never stops for the interrupt; when
// ctx is done the helper gives up (SIGTERM), and the target, once thawed,
// runs on untouched and can be taken then. Needs the cgroup v1 freezer.
func TestTakeCancelFrozen(t *testing.T) {
	const root = "/sys/fs/cgroup/freezer"
	prereq.Path(t, filepath.Join(root, "cgroup.procs"), "the cgroup v1 freezer")
	c := startChild(t, "plain")
	cg := filepath.Join(root, fmt.Sprintf("memtrack-test-%d", c.pid))
	if err := os.Mkdir(cg, 0o755); err != nil {
		prereq.Missing(t, "a freezer cgroup of our own: %v", err)
	}
	write := func(file, value string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(cg, file), []byte(value), 0); err != nil {
			t.Error(err)
		}
	}
	thaw := func() {
		write("freezer.state", "THAWED")
		for i := 0; i < 1000 && readTrim(filepath.Join(cg, "freezer.state")) != "THAWED"; i++ {
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() {
		thaw()
		if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(c.pid)), 0); err != nil {
			t.Errorf("move the child back to the root freezer cgroup: %v", err)
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	write("cgroup.procs", strconv.Itoa(c.pid))
	write("freezer.state", "FROZEN")
	for i := 0; readTrim(filepath.Join(cg, "freezer.state")) != "FROZEN"; i++ {
		if i == 2000 {
			t.Fatal("child not frozen")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	f, err := Take(ctx, []string{helperPath}, launch.OS{}, c.pid)
	if err == nil {
		f.Close()
		t.Fatal("Take of a frozen process succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Take gave up after %v", d)
	}
	t.Logf("frozen: %v", err)
	thaw()
	c.do("write 1", "read 1")
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid)); err != nil || !strings.Contains(string(b), "TracerPid:\t0\n") {
		t.Fatalf("child still traced: %s %v", b, err)
	}
	take(t, c.pid).Close()
	c.do("write 1")
}

// TestTakeStopped: a process stopped by SIGSTOP is left alone and stays
// stopped.
func TestTakeStopped(t *testing.T) {
	c := startChild(t, "plain")
	if err := unix.Kill(c.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(readTrim(fmt.Sprintf("/proc/%d/status", c.pid)), "State:\tT"); i++ {
		if i == 2000 {
			t.Fatal("child not stopped")
		}
		time.Sleep(time.Millisecond)
	}
	_, err := Take(t.Context(), []string{helperPath}, launch.OS{}, c.pid)
	if err == nil {
		t.Fatal("Take of a stopped process succeeded")
	}
	t.Logf("stopped: %v", err)
	time.Sleep(20 * time.Millisecond)
	if st := readTrim(fmt.Sprintf("/proc/%d/status", c.pid)); !strings.Contains(st, "State:\tT (stopped)") {
		t.Errorf("child no longer stopped after Take: %s", st[:strings.Index(st, "Tgid")])
	}
	unix.Kill(c.pid, unix.SIGCONT)
	c.do("write 1")
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// TestHugePages: a write into a write-protected transparent huge page
// reports that page only (the kernel splits the huge page).
func TestHugePages(t *testing.T) {
	c := startChild(t, "plain")
	tr := c.attach()
	const pages = 1024
	f := strings.Fields(c.do(fmt.Sprintf("mmaphuge %d", pages)))
	region, base := f[0], parseHex(t, f[1])
	if _, err := tr.Register(); err != nil {
		t.Fatal(err)
	}
	cats := pageCategories(t, tr, base, pages)
	if cats[0]&pageIsHuge == 0 {
		prereq.Missing(t, "a transparent huge page (categories of the first page: %s)", catString(cats[0]))
	}
	reset(t, tr)
	checkWritten(t, tr, base, pages, nil, "after Reset")
	c.do("write 3 "+region, "write 700 "+region)
	checkWritten(t, tr, base, pages, []int{3, 700}, "after writes")
	reset(t, tr)
	checkWritten(t, tr, base, pages, nil, "after the second Reset")
	t.Logf("first page after the writes: %s", catString(pageCategories(t, tr, base, pages)[0]))
}
