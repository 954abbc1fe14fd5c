// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/runtime/memtrack"
	"github.com/iorrc/rrc/test/prereq"
)

// TestPagesMatchCRIU tracks a running program's writes, takes a full CRIU
// dump as the parent, lets the program write on, stops it, writes its
// memory with WritePages over the parent and merges; CRIU then dumps the
// same stopped state in full, and the two images must hold the same pages
// with the same bytes.
func TestPagesMatchCRIU(t *testing.T) {
	prereq.Root(t, "ptrace, cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, _ := startWorkload(t, cg)
	pid := cmd.Process.Pid

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uffd, err := memtrack.MakeUffd(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := memtrack.Attach(pid, uffd)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	tmp := t.TempDir()
	var parent, fast, full string
	var st PagesStats
	var took time.Duration
	for attempt := 1; ; attempt++ {
		dir := filepath.Join(tmp, strconv.Itoa(attempt))
		parent, fast, full = filepath.Join(dir, "parent"), filepath.Join(dir, "fast"), filepath.Join(dir, "full")
		setFreezer(t, cg, "FROZEN")
		criuDump(t, pid, parent, "--freeze-cgroup", cg)
		if _, err := tr.Reset(); err != nil {
			t.Fatal(err)
		}
		setFreezer(t, cg, "THAWED")
		time.Sleep(200 * time.Millisecond) // it writes on

		setFreezer(t, cg, "FROZEN")
		if err := os.Mkdir(fast, 0o700); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		var err error
		st, err = WritePages(fast, parent, pid, pid, tr)
		took = time.Since(t0)
		if errors.Is(err, ErrChanged) && attempt < 3 {
			// The Go runtime mapped memory meanwhile (a new thread's
			// stack): the fast path rightly falls back; try again.
			t.Logf("attempt %d: %v", attempt, err)
			setFreezer(t, cg, "THAWED")
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	criuDump(t, pid, full, "--freeze-cgroup", cg)
	setFreezer(t, cg, "THAWED")
	t.Logf("WritePages: %d pages copied, %d from the parent, in %v", st.Copied, st.FromParent, took)
	if st.Copied == 0 || st.FromParent == 0 {
		t.Errorf("not incremental: %d copied, %d from the parent", st.Copied, st.FromParent)
	}
	if _, err := criuimage.MergeParent(fast, parent); err != nil {
		t.Fatal(err)
	}
	got, want := imagePages(t, fast, pid), imagePages(t, full, pid)
	missing, extra, differ := 0, 0, 0
	for va, p := range want {
		g, ok := got[va]
		switch {
		case !ok:
			if missing++; missing <= 3 {
				t.Errorf("page %#x: in CRIU's dump, not in the fast one", va)
			}
		case !bytes.Equal(g, p):
			if differ++; differ <= 3 {
				t.Errorf("page %#x differs", va)
			}
		}
	}
	for va := range got {
		if _, ok := want[va]; !ok {
			if extra++; extra <= 3 {
				t.Errorf("page %#x: in the fast dump, not in CRIU's", va)
			}
		}
	}
	t.Logf("%d pages compared: %d missing, %d extra, %d differ", len(want), missing, extra, differ)
}

func imagePages(t *testing.T, dir string, pid int) map[uint64][]byte {
	t.Helper()
	m := map[uint64][]byte{}
	err := criuimage.ReadPages(dir, fmt.Sprintf("pagemap-%d.img", pid), func(va uint64, page []byte) error {
		m[va] = bytes.Clone(page)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
