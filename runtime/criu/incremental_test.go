// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/test/lab"
)

// memoryTracking is incremental dumps with the helper and library built
// from this tree.
func memoryTracking(t *testing.T) *MemoryTracking {
	preload, helper := lab.MemoryTools(t)
	return &MemoryTracking{Preload: preload, Helper: []string{helper}}
}

// TestIncrementalCheckpointMatchesMemory checkpoints a Redis that is being
// written to, with incremental memory dumps, and compares every checkpoint,
// page by page, with the container's memory read while it was frozen: the
// merged image must hold exactly the pages CRIU dumps in full (present,
// private, not the zero page, not an untouched file page) with exactly
// their content, although CRIU copied only the pages written since the
// previous dump.
func TestIncrementalCheckpointMatchesMemory(t *testing.T) {
	l := testLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const id = "incr1"
	ip := runRedis(ctx, t, l, id)
	loadRedis(ctx, t, l, ip, 20000)

	images := imageTmpfs(t)
	mt := memoryTracking(t)
	mt.KernelCache = filepath.Join(images, "criu.kdat")
	_, hostCacheErr := os.Stat("/run/criu.kdat")
	c, err := NewCheckpointer(ctx, CheckpointerConfig{
		RuncRoot: "/run/containerd/runc/" + l.Namespace("a"), ID: id,
		CRIU:              CRIUCommand{Argv: []string{"nsenter", "--net=" + l.Netns("a"), "criu"}},
		Dump:              FastDumpOptions(),
		CaptureRootfsDiff: true, PrepareNext: true,
		Memory: mt,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c.mem == nil || len(c.mem.trackers) != 1 {
		t.Fatalf("memory tracking did not start (trackers: %v)", c.mem)
	}
	pid := c.State().InitPid

	// Writes all along: SETs over a key space larger than the loaded one.
	nc, err := lab.DialInNetns(l.Netns("client"), ip+":6379")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn := lab.NewRedisConn(nc)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := conn.Do("SET", "key:"+strconv.Itoa(i*7919%40000), strings.Repeat("w", 100+i%50)); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	for i := 1; i <= 6; i++ {
		dir := filepath.Join(images, fmt.Sprintf("epoch-%d", i))
		var mem map[uint64][]byte
		var snapErr error
		st, err := c.CheckpointWithHooks(ctx, dir, CheckpointHooks{Frozen: func() {
			mem, snapErr = dumpableMemory(pid)
		}})
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		if snapErr != nil {
			t.Fatalf("checkpoint %d: reading the frozen container's memory: %v", i, snapErr)
		}
		t.Logf("checkpoint %d: pause %v, pages copied by CRIU %d, left in the parent %d, merge %v",
			i, st.Pause, st.CRIUPages, st.ParentPages, st.Merge)
		if i > 1 && st.ParentPages == 0 {
			t.Errorf("checkpoint %d: not incremental: %d pages copied, none from the parent", i, st.CRIUPages)
		}
		if _, err := os.Lstat(filepath.Join(dir, "parent")); err == nil {
			t.Errorf("checkpoint %d: the image still links to its parent", i)
		}
		compareImage(t, i, dir, mem)
		time.Sleep(50 * time.Millisecond)
	}
	// The dumps kept CRIU's kernel-feature cache where they were told, and
	// left the host's alone.
	if fi, err := os.Stat(mt.KernelCache); err != nil || fi.Size() == 0 {
		t.Errorf("CRIU's kernel-feature cache %s: %v (size %v)", mt.KernelCache, err, fi)
	}
	if _, err := os.Stat("/run/criu.kdat"); (err == nil) != (hostCacheErr == nil) {
		t.Errorf("/run/criu.kdat: %v before the dumps, %v after", hostCacheErr, err)
	}
}

// compareImage checks that the image's pages of the container's init
// (pid 1 inside its namespace) are exactly mem.
func compareImage(t *testing.T, epoch int, dir string, mem map[uint64][]byte) {
	t.Helper()
	seen, bad := 0, 0
	err := criuimage.ReadPages(dir, "pagemap-1.img", func(vaddr uint64, page []byte) error {
		want, ok := mem[vaddr]
		if !ok {
			return nil // vDSO and the like: dumped whole, not in mem
		}
		seen++
		if !bytes.Equal(want, page) && !rseqCPUFields(want, page) {
			if bad++; bad <= 3 {
				var diffs []string
				for o := range page {
					if page[o] != want[o] && len(diffs) < 8 {
						diffs = append(diffs, fmt.Sprintf("+%d: %#x→%#x", o, want[o], page[o]))
					}
				}
				t.Errorf("checkpoint %d: page %#x differs from the frozen container's memory: %s", epoch, vaddr, strings.Join(diffs, ", "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("checkpoint %d: %v", epoch, err)
	}
	if seen != len(mem) {
		t.Errorf("checkpoint %d: image holds %d of the %d pages the container had", epoch, seen, len(mem))
	}
	if bad > 0 {
		t.Errorf("checkpoint %d: %d pages differ", epoch, bad)
	}
}

// rseqCPUFields reports whether a and b differ only where the kernel writes
// a thread's CPU into its restartable-sequences area (struct rseq, 32 bytes
// aligned: cpu_id_start, cpu_id, mm_cid), as it does when CRIU's parasite
// runs the frozen thread on another CPU than before.
func rseqCPUFields(a, b []byte) bool {
	for o := 0; o+4 <= len(a); o += 4 {
		x, y := binary.LittleEndian.Uint32(a[o:]), binary.LittleEndian.Uint32(b[o:])
		if x == y {
			continue
		}
		if f := o % 32; (f != 0 && f != 4 && f != 24) || x > 4096 || y > 4096 {
			return false
		}
	}
	return true
}

// dumpableMemory reads, from a stopped process, the pages CRIU dumps:
// present or swapped, not file pages (the page cache's, untouched), not the
// zero page, in private mappings other than the kernel's special ones.
func dumpableMemory(pid int) (map[uint64][]byte, error) {
	zero, err := zeroPFN()
	if err != nil {
		return nil, err
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	out := map[uint64][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[1][3] != 'p' || (len(f) > 5 && strings.HasPrefix(f[5], "[v")) {
			continue // shared, or [vdso], [vvar], [vsyscall]
		}
		var start, end uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &start, &end); err != nil {
			return nil, err
		}
		n := (end - start) / 4096
		ents := make([]byte, n*8)
		if _, err := pm.ReadAt(ents, int64(start/4096*8)); err != nil {
			return nil, fmt.Errorf("pagemap %s: %w", f[0], err)
		}
		for i := uint64(0); i < n; i++ {
			e := binary.LittleEndian.Uint64(ents[i*8:])
			present, swapped, file := e&(1<<63) != 0, e&(1<<62) != 0, e&(1<<61) != 0
			if !(present || swapped) || file || (present && e&(1<<55-1) == zero) {
				continue
			}
			page := make([]byte, 4096)
			if _, err := mf.ReadAt(page, int64(start+i*4096)); err != nil {
				return nil, fmt.Errorf("read %#x: %w", start+i*4096, err)
			}
			out[start+i*4096] = page
		}
	}
	return out, sc.Err()
}

// zeroPFN is the page frame of the kernel's zero page, which a read of
// untouched anonymous memory maps.
func zeroPFN() (uint64, error) {
	b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(b)
	if b[0] != 0 { // the read maps the zero page
		return 0, fmt.Errorf("fresh anonymous memory reads %#x", b[0])
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, err
	}
	defer pm.Close()
	var e [8]byte
	addr := uint64(uintptr(unsafe.Pointer(&b[0])))
	if _, err := pm.ReadAt(e[:], int64(addr/4096*8)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(e[:]) & (1<<55 - 1), nil
}

// writePagemap writes a pagemap image named name into dir with its pages
// file, each page filled with fill.
func writePagemap(t *testing.T, dir, name string, entries []criuimage.Entry, fill byte) {
	t.Helper()
	pm := &criuimage.Pagemap{PagesID: 1, Entries: entries}
	if err := os.WriteFile(filepath.Join(dir, name), pm.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{fill}, int(pm.PresentPages())*4096)
	if err := os.WriteFile(filepath.Join(dir, pm.PagesFile()), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rebase keeps each dump, merged, as the next parent, and cuts the chain
// when a merge fails: the next dump is then full.
func TestMemStateRebase(t *testing.T) {
	const present, parentFlag = criuimage.FlagPresent, criuimage.FlagParent
	work := t.TempDir()
	m := &memState{spare: newMergeSpare()}
	defer m.close()
	dump := func(name string, entries []criuimage.Entry, fill byte) string {
		dir := filepath.Join(work, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		writePagemap(t, dir, "pagemap-1.img", entries, fill)
		if err := os.WriteFile(filepath.Join(dir, "inventory.img"), []byte("inv"), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// A full dump: kept as the parent, no merge.
	d1 := dump("e1", []criuimage.Entry{{Vaddr: 0x10000, NrPages: 4, Flags: present}}, 'a')
	if _, err := m.rebase(d1, false, slog.Default()); err != nil {
		t.Fatal(err)
	}
	first := m.base
	// After it, a spare of its pages file's size is filled for the next
	// merge to write into.
	m.spare.wg.Wait()
	spares, _ := filepath.Glob(filepath.Join(work, ".merge-spare-*"))
	var spare unix.Stat_t
	if len(spares) != 1 || unix.Stat(spares[0], &spare) != nil || spare.Size != 4*4096 {
		t.Fatalf("spares after the first dump: %v (size %d), want one of 4 pages", spares, spare.Size)
	}
	if first == "" {
		t.Fatal("no parent kept after a full dump")
	}
	// An incremental one over it: page 2 dirty, the rest from the parent.
	d2 := dump("e2", []criuimage.Entry{{Vaddr: 0x10000, NrPages: 2, Flags: parentFlag},
		{Vaddr: 0x12000, NrPages: 1, Flags: present}, {Vaddr: 0x13000, NrPages: 1, Flags: parentFlag}}, 'b')
	if err := os.Symlink("../"+filepath.Base(first), filepath.Join(d2, "parent")); err != nil {
		t.Fatal(err)
	}
	st, err := m.rebase(d2, true, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var pages unix.Stat_t
	if err := unix.Stat(filepath.Join(d2, "pages-1.img"), &pages); err != nil || pages.Ino != spare.Ino {
		t.Errorf("the merged pages file is not the spare (inode %d, spare %d, %v)", pages.Ino, spare.Ino, err)
	}
	if st.ParentPages != 3 || st.OwnPages != 1 {
		t.Errorf("merge stats %+v, want 3 pages from the parent and 1 own", st)
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("the old parent %s is still there (%v)", first, err)
	}
	if _, err := os.Lstat(filepath.Join(d2, "parent")); !os.IsNotExist(err) {
		t.Error("the merged dump still links to its parent")
	}
	var got []byte
	if err := criuimage.ReadPages(m.base, "pagemap-1.img", func(va uint64, p []byte) error {
		got = append(got, p[0])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "aaba" {
		t.Errorf("the new parent's pages are %q, want aaba", got)
	}
	for _, f := range []string{"inventory.img", "pagemap-1.img", "pages-1.img"} {
		var a, b unix.Stat_t
		if unix.Stat(filepath.Join(d2, f), &a) != nil || unix.Stat(filepath.Join(m.base, f), &b) != nil || a.Ino != b.Ino {
			t.Errorf("%s: the parent is not a hard link of the dump's", f)
		}
	}
	// A hole the parent does not hold: the chain is cut.
	second := m.base
	d3 := dump("e3", []criuimage.Entry{{Vaddr: 0x90000, NrPages: 1, Flags: parentFlag}}, 'c')
	if _, err := m.rebase(d3, true, slog.Default()); err == nil {
		t.Fatal("a merge with a hole missing from the parent succeeded")
	}
	if m.base != "" {
		t.Errorf("after a failed merge the next parent is %s, want none", m.base)
	}
	if _, err := os.Stat(second); !os.IsNotExist(err) {
		t.Errorf("the parent of the failed merge is still there (%v)", err)
	}
	// memState.parent: none without trackers, whatever the base.
	if p := m.parent(); p != "" {
		t.Errorf("parent() = %q without a base", p)
	}
	m.close()
	if left, _ := filepath.Glob(filepath.Join(work, ".merge-spare-*")); len(left) > 0 {
		t.Errorf("spares left after close: %v", left)
	}
}

func TestCgroupProcs(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    []int
		err     bool
	}{
		{"", nil, false},
		{"12\n345\n", []int{12, 345}, false},
		{"12\nx\n", nil, true},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := cgroupProcs(dir)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("cgroupProcs(%q) = %v, %v; want %v, error %v", tc.content, got, err, tc.want, tc.err)
		}
	}
	if _, err := cgroupProcs(t.TempDir()); err == nil {
		t.Error("no error for a cgroup without cgroup.procs")
	}
}
