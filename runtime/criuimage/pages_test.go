// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/prereq"
)

func TestReadPagesErrors(t *testing.T) {
	errStop := errors.New("stop")
	tests := []struct {
		name    string
		entries []Entry
		corrupt func(t *testing.T, dir string)
		fn      func(uint64, []byte) error
		wantErr string
	}{
		{name: "parent entry", entries: []Entry{{0, 1, P}, {pg(1), 1, H}}, wantErr: "has no data in this image"},
		{name: "lazy-only entry", entries: []Entry{{0, 1, FlagLazy}}, wantErr: "has no data in this image"},
		{name: "pages file short", entries: []Entry{{0, 2, P}},
			corrupt: func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, "pages-1.img"), pg(1)) },
			wantErr: "corrupt or truncated"},
		{name: "no pages file", entries: []Entry{{0, 2, P}},
			corrupt: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "pages-1.img")) },
			wantErr: "no such file"},
		{name: "fn error returned as is", entries: []Entry{{0, 2, P}},
			fn:      func(va uint64, _ []byte) error { return errStop },
			wantErr: "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeImage(t, dir, "pagemap-1.img", 1, tagInc, tt.entries)
			if tt.corrupt != nil {
				tt.corrupt(t, dir)
			}
			fn := tt.fn
			if fn == nil {
				fn = func(uint64, []byte) error { return nil }
			}
			err := ReadPages(dir, "pagemap-1.img", fn)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadPages = %v, want error %q", err, tt.wantErr)
			}
			if tt.fn != nil && err != errStop {
				t.Errorf("fn's error wrapped: %v", err)
			}
		})
	}
}

// The write phase, with more runs than one batch of iovecs, and its clean-up
// when a source turns out short.
func TestApplyPlans(t *testing.T) {
	for _, short := range []bool{false, true} {
		t.Run(fmt.Sprintf("short=%v", short), func(t *testing.T) {
			dir, parentDir := t.TempDir(), t.TempDir()
			// Big enough for several copy buffers.
			writeImage(t, parentDir, "pagemap-1.img", 1, tagParent, []Entry{{0, 3000, P}})
			// Every other page dirty: 3000 runs, three batches.
			var entries []Entry
			var own []uint64
			for i := uint64(0); i < 3000; i++ {
				if i%2 == 0 {
					entries = append(entries, Entry{pg(i), 1, P})
					own = append(own, pg(i))
				} else {
					entries = append(entries, Entry{pg(i), 1, H})
				}
			}
			inc := testImage{"pagemap-1.img", 1, entries}
			writeImage(t, dir, inc.name, inc.id, tagInc, inc.entries)
			pl, err := planMerge(dir, parentDir, inc.name)
			if err != nil {
				t.Fatal(err)
			}
			if short { // after the checks: only the copy sees it
				truncate(t, filepath.Join(parentDir, "pages-1.img"), pg(2500))
			}
			before := snapshot(t, dir)
			st, err := applyPlans([]*mergePlan{pl})
			if short {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("applyPlans = %+v, %v; want an end of file error", st, err)
				}
				if !reflect.DeepEqual(snapshot(t, dir), before) {
					t.Error("dir changed by a failed merge")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.ParentPages != 1500 || st.OwnPages != 1500 || st.Files != 1 {
				t.Errorf("stats %+v", st)
			}
			checkMerged(t, dir, inc, []Entry{{0, 3000, P}}, own)
		})
	}
}

// A real dump of a sleeping process: the images decode, the pages file
// matches the pagemap, Encode gives CRIU's bytes, and the pages are the
// process's memory. Needs root and criu on PATH (what the checked-in
// testdata was made with).
func TestCRIUDump(t *testing.T) {
	prereq.Long(t, "a real CRIU dump")
	prereq.Root(t, "CRIU dump")
	prereq.Commands(t, "criu")
	criu, err := prereq.LookPath("criu")
	if err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "1000")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleep.Process.Kill()
		sleep.Wait()
	}()
	time.Sleep(100 * time.Millisecond) // let it reach nanosleep
	dir := t.TempDir()
	pid := sleep.Process.Pid
	out, err := exec.Command(criu, "dump", "-t", fmt.Sprint(pid), "-D", dir, "--shell-job", "--leave-running", "-o", "dump.log").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		t.Fatalf("criu dump: %v\n%s\n%s", err, out, log)
	}
	name := fmt.Sprintf("pagemap-%d.img", pid)
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := DecodePagemap(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pm.Encode(), b) {
		t.Errorf("Encode differs from CRIU's file:\n%x\n%x", pm.Encode(), b)
	}
	if _, err := checkPagesSize(filepath.Join(dir, pm.PagesFile()), pm); err != nil {
		t.Error(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	// The resumed process changes a few bytes: CRIU makes the nanosleep
	// return EINTR, so sleep stores the remaining time on its stack and
	// sleeps again, and the kernel updates the rseq area's CPU number if it
	// resumes on another CPU. Any mistake in ReadPages's offsets would
	// change whole pages.
	const maxDiffer = 32
	var n, differ int
	real := make([]byte, pageSize)
	err = ReadPages(dir, name, func(va uint64, page []byte) error {
		n++
		if _, err := mem.ReadAt(real, int64(va)); err != nil {
			return fmt.Errorf("read memory at %#x: %w", va, err)
		}
		var at []int
		for i := range page {
			if page[i] != real[i] {
				at = append(at, i)
			}
		}
		if len(at) > 0 {
			t.Logf("page %#x differs from the process's at %v", va, at)
		}
		differ += len(at)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || uint64(n) != pm.PresentPages() {
		t.Errorf("ReadPages gave %d pages, pagemap has %d", n, pm.PresentPages())
	}
	if differ > maxDiffer {
		t.Errorf("%d bytes of %d pages differ from the process's memory", differ, n)
	}
}
