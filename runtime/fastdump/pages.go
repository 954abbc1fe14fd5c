// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	criumm "github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/runtime/memtrack"
)

// ErrChanged is wrapped by the errors of a capture that found something the
// previous checkpoint does not describe (here: the mappings): the
// checkpoint must be a full CRIU dump instead.
var ErrChanged = errors.New("changed since the previous checkpoint")

// VMA status bits of CRIU's mm image (criu/include/image.h).
const (
	vmaRegular     = 1 << 0
	vmaVsyscall    = 1 << 2
	vmaVDSO        = 1 << 3
	vmaFilePrivate = 1 << 6
	vmaAnonPrivate = 1 << 9
	vmaAIORing     = 1 << 13
	vmaShadowStack = 1 << 15
)

// PagesStats says what WritePages did.
type PagesStats struct {
	Copied, FromParent uint64 // pages
}

// WritePages writes the memory of one process (pid here, vpid in the
// images) into dir as an incremental dump over the complete image set in
// parentDir, as CRIU's dump with a parent writes it: the pages that changed
// since the parent (memtrack: written since the Reset that followed it)
// copied into a pages file, the rest holes in the parent, which
// criuimage.MergeParent then fills. The process must be stopped, and its
// mappings be those of the parent's mm image, or the error wraps
// ErrChanged.
func WritePages(dir, parentDir string, vpid, pid int, tr *memtrack.Tracker) (PagesStats, error) {
	var st PagesStats
	vmas, err := readVMAs(filepath.Join(parentDir, fmt.Sprintf("mm-%d.img", vpid)))
	if err != nil {
		return st, err
	}
	if err := sameMappings(pid, vmas); err != nil {
		return st, err
	}
	parent, err := criuimage.ReadPagemap(filepath.Join(parentDir, fmt.Sprintf("pagemap-%d.img", vpid)))
	if err != nil {
		return st, err
	}
	pm := &criuimage.Pagemap{PagesID: parent.PagesID}
	pages, err := os.OpenFile(filepath.Join(dir, pm.PagesFile()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return st, fmt.Errorf("pages of %d: %w", pid, err)
	}
	defer pages.Close()
	w := &pageWriter{pid: pid, out: bufio.NewWriterSize(pages, 1<<20)}
	add := func(start, end uint64, changed bool) {
		n := (end - start) / pageSize
		flags := uint32(criuimage.FlagParent)
		if changed {
			flags = criuimage.FlagPresent
			st.Copied += n
			w.add(start, end)
		} else {
			st.FromParent += n
		}
		if k := len(pm.Entries); k > 0 && pm.Entries[k-1].End() == start && pm.Entries[k-1].Flags == flags {
			pm.Entries[k-1].NrPages += n
			return
		}
		pm.Entries = append(pm.Entries, criuimage.Entry{Vaddr: start, NrPages: n, Flags: flags})
	}
	for _, v := range vmas {
		switch {
		case v.status&vmaVDSO != 0:
			add(v.start, v.end, true) // dumped whole every time, as CRIU does
		case v.status&(vmaAIORing|vmaShadowStack) != 0:
			return st, fmt.Errorf("mapping %#x-%#x (status %#x): %w: not carried by the fast path", v.start, v.end, v.status, ErrChanged)
		case v.private():
			err := tr.Dumpable(v.start, v.end, func(r memtrack.PageRun) { add(r.Start, r.End, r.Changed) })
			if err != nil {
				return st, err
			}
		}
	}
	if err := w.flush(); err != nil {
		return st, err
	}
	if err := pages.Close(); err != nil {
		return st, fmt.Errorf("pages of %d: %w", pid, err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pagemap-%d.img", vpid)), pm.Encode(), 0o600); err != nil {
		return st, fmt.Errorf("pagemap of %d: %w", pid, err)
	}
	return st, nil
}

var pageSize = uint64(os.Getpagesize())

type vmaRange struct {
	start, end uint64
	status     uint32
}

// private is CRIU's vma_entry_is_private for the user address space.
func (v vmaRange) private() bool {
	return v.status&vmaRegular != 0 && v.status&(vmaAnonPrivate|vmaFilePrivate) != 0 && v.end <= taskSize
}

// taskSize is TASK_SIZE of x86-64 with 4-level page tables.
const taskSize = 0x7ffffffff000

func readVMAs(path string) ([]vmaRange, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mm image: %w", err)
	}
	r, err := criuimage.DecodeRecords(b, 0)
	if err != nil || len(r.Entries) != 1 {
		return nil, fmt.Errorf("mm image %s: %v (%d records)", path, err, len(r.Entries))
	}
	var mm criumm.MmEntry
	if err := proto.Unmarshal(r.Entries[0], &mm); err != nil {
		return nil, fmt.Errorf("mm image %s: %w", path, err)
	}
	vmas := make([]vmaRange, 0, len(mm.Vmas))
	for _, v := range mm.Vmas {
		vmas = append(vmas, vmaRange{v.GetStart(), v.GetEnd(), v.GetStatus()})
	}
	return vmas, nil
}

// sameMappings checks that the process's mappings have the boundaries of
// the image's VMAs. CRIU records [vsyscall] too, and [vvar] with the
// [vvar_vclock] after it as one VMA.
func sameMappings(pid int, vmas []vmaRange) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return fmt.Errorf("mappings of %d: %w", pid, err)
	}
	defer f.Close()
	var maps []vmaRange
	prevVvar := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		s, e, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(s, 16, 64)
		end, err2 := strconv.ParseUint(e, 16, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("mappings of %d: line %q", pid, sc.Text())
		}
		vvar := len(fields) == 6 && strings.HasPrefix(fields[5], "[vvar")
		if n := len(maps); vvar && prevVvar && maps[n-1].end == start {
			maps[n-1].end = end
		} else {
			maps = append(maps, vmaRange{start: start, end: end})
		}
		prevVvar = vvar
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("mappings of %d: %w", pid, err)
	}
	if len(maps) != len(vmas) {
		return fmt.Errorf("mappings of %d: %d, the previous checkpoint had %d: %w", pid, len(maps), len(vmas), ErrChanged)
	}
	for i, m := range maps {
		if m.start != vmas[i].start || m.end != vmas[i].end {
			return fmt.Errorf("mappings of %d: %#x-%#x is not the previous checkpoint's mapping %d: %w", pid, m.start, m.end, i, ErrChanged)
		}
	}
	return nil
}

// pageWriter copies runs of another process's pages to out, gathering
// them into large process_vm_readv calls.
type pageWriter struct {
	pid    int
	out    *bufio.Writer
	remote []unix.RemoteIovec
	size   int
	buf    []byte
	failed error
}

const maxReadv = 1 << 20 // bytes per process_vm_readv

func (w *pageWriter) add(start, end uint64) {
	for start < end && w.failed == nil {
		n := min(end-start, uint64(maxReadv-w.size))
		w.remote = append(w.remote, unix.RemoteIovec{Base: uintptr(start), Len: int(n)})
		w.size += int(n)
		start += n
		if w.size == maxReadv || len(w.remote) == 1024 {
			_ = w.flush() // sets failed
		}
	}
}

func (w *pageWriter) flush() error {
	if w.failed != nil || w.size == 0 {
		return w.failed
	}
	if cap(w.buf) < w.size {
		w.buf = make([]byte, maxReadv)
	}
	buf := w.buf[:w.size]
	n, err := unix.ProcessVMReadv(w.pid, []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}, w.remote, 0)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("read %d of %d bytes", n, len(buf))
	}
	if err != nil {
		w.failed = fmt.Errorf("pages of %d: process_vm_readv: %w", w.pid, err)
		return w.failed
	}
	if _, err := w.out.Write(buf); err != nil {
		w.failed = fmt.Errorf("pages of %d: %w", w.pid, err)
		return w.failed
	}
	w.remote, w.size = w.remote[:0], 0
	if err := w.out.Flush(); err != nil {
		w.failed = fmt.Errorf("pages of %d: %w", w.pid, err)
	}
	return w.failed
}
