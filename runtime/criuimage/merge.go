// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// MergeStats says what MergeParent did.
type MergeStats struct {
	Files       int    // pagemaps rewritten (with their pages files)
	ParentPages uint64 // pages copied from the parent's pages files
	OwnPages    uint64 // pages copied from dir's own pages files
	Bytes       int64  // bytes written: new pages files and pagemaps
}

// parentLink is the symlink to the parent images that CRIU leaves in an
// incremental dump's directory.
const parentLink = "parent"

// MergeParent makes the incremental dump in dir a full one: for every
// pagemap-*.img (and pagemap-shmem-*.img) in dir with PE_PARENT entries, it
// copies the data of those ranges from the same-named image in parentDir,
// which must be a full image set, and rewrites dir's pagemap and pages
// file (same pages id, so same file name) with only present entries. The
// parent's entry flags (e.g. PE_LAZY) go with the data taken from it, and
// adjacent entries with equal flags are coalesced. Images without PE_PARENT
// entries are left alone. At the end the "parent" symlink is removed.
//
// Everything is read and checked before anything is written, and the new
// files are written under temporary names first, so an error leaves dir as
// it was. Each file is renamed into place pages first; a crash between the
// two renames of a pagemap leaves its new pages file beside its old
// pagemap, which the size check here and in ReadPages reports (checkpoint
// directories live on a tmpfs and a crash loses them anyway).
func MergeParent(dir, parentDir string) (MergeStats, error) {
	return MergeParentReusing(dir, parentDir, "")
}

// MergeParentReusing is MergeParent, with the first new pages file made
// from spare (if not ""): a file on dir's file system whose memory has been
// written through already, which is renamed into dir and overwritten
// instead of a new file being filled. In a virtual machine that hands free
// memory back to its host, filling a new file can take many times longer
// (the host faults the memory in again; docs/CHECKPOINT.md has the figures).
// spare is taken in every case: used, or removed.
func MergeParentReusing(dir, parentDir, spare string) (MergeStats, error) {
	defer func() {
		if spare != "" {
			os.Remove(spare)
		}
	}()
	names, err := filepath.Glob(filepath.Join(dir, "pagemap-*.img"))
	if err != nil {
		return MergeStats{}, fmt.Errorf("list pagemaps in %s: %w", dir, err)
	}
	var plans []*mergePlan
	for _, path := range names {
		pl, err := planMerge(dir, parentDir, filepath.Base(path))
		if err != nil {
			for _, pl := range plans {
				pl.removeTemps() // the spare, if one took it
			}
			return MergeStats{}, fmt.Errorf("merge %s with its parent: %w", path, err)
		}
		if pl != nil {
			if spare != "" {
				pl.spare, spare = spare, ""
			}
			plans = append(plans, pl)
		}
	}
	st, err := applyPlans(plans)
	if err != nil {
		return st, err
	}
	// Only CRIU's symlink: a directory of that name is nothing of ours.
	link := filepath.Join(dir, parentLink)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(link); err != nil {
			return st, fmt.Errorf("remove parent link: %w", err)
		}
	}
	return st, nil
}

// applyPlans writes the merged files of plans under temporary names, then
// renames them all into place.
func applyPlans(plans []*mergePlan) (MergeStats, error) {
	var st MergeStats
	defer func() {
		for _, pl := range plans {
			pl.removeTemps()
		}
	}()
	for _, pl := range plans {
		if err := pl.write(&st); err != nil {
			return MergeStats{}, fmt.Errorf("merge %s with its parent: %w", filepath.Join(pl.dir, pl.name), err)
		}
	}
	for _, pl := range plans {
		if err := pl.commit(); err != nil {
			return st, fmt.Errorf("merge %s with its parent: %w", filepath.Join(pl.dir, pl.name), err)
		}
		st.Files++
	}
	return st, nil
}

// segment is a run of data for the new pages file, taken from the parent's
// pages file or from dir's own.
type segment struct {
	fromParent bool
	off, len   uint64 // bytes in the source file
}

// mergePlan is the merge of one pagemap, checked and ready to write.
type mergePlan struct {
	dir, name              string
	merged                 *Pagemap
	segs                   []segment
	ownPages, parentPages  string      // source pages files
	tmpPages, tmpPagemap   string      // written by write, renamed by commit
	spare                  string      // a file to write the pages into (MergeParentReusing)
	pagesMode, pagemapMode fs.FileMode // of the files replaced
	parentCount, ownCount  uint64
}

// planMerge reads and checks dir's pagemap name and its parent, and plans
// the new pagemap; nil if the pagemap has no PE_PARENT entry.
func planMerge(dir, parentDir, name string) (*mergePlan, error) {
	inc, err := ReadPagemap(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if !inc.HasParent() {
		return nil, nil
	}
	parent, err := ReadPagemap(filepath.Join(parentDir, name))
	if err != nil {
		return nil, err
	}
	if parent.HasParent() {
		return nil, fmt.Errorf("parent %s is not a full image: it has PE_PARENT entries", filepath.Join(parentDir, name))
	}
	pl := &mergePlan{dir: dir, name: name,
		ownPages: filepath.Join(dir, inc.PagesFile()), parentPages: filepath.Join(parentDir, parent.PagesFile())}
	fi, err := checkPagesSize(pl.ownPages, inc)
	if err != nil {
		return nil, err
	}
	pl.pagesMode = fi.Mode().Perm()
	if fi, err = os.Stat(filepath.Join(dir, name)); err != nil {
		return nil, err
	}
	pl.pagemapMode = fi.Mode().Perm()
	if _, err := checkPagesSize(pl.parentPages, parent); err != nil {
		return nil, err
	}
	entries, segs, err := mergeEntries(inc, parent)
	if err != nil {
		return nil, err
	}
	pl.merged = &Pagemap{PagesID: inc.PagesID, Entries: entries}
	pl.segs = segs
	for _, s := range segs {
		if s.fromParent {
			pl.parentCount += s.len / pageSize
		} else {
			pl.ownCount += s.len / pageSize
		}
	}
	return pl, nil
}

// checkPagesSize checks that the pages file holds exactly pm's present pages.
func checkPagesSize(path string, pm *Pagemap) (fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if want := pm.PresentPages() * pageSize; uint64(fi.Size()) != want {
		return nil, fmt.Errorf("%s is %d bytes, its pagemap's %d present pages make %d: corrupt or truncated",
			path, fi.Size(), pm.PresentPages(), want)
	}
	return fi, nil
}

// mergeEntries makes inc's entries all present: its present ranges from its
// own pages file, its PE_PARENT ones from the parent's, at the parent's
// offsets. It returns the coalesced entries and the copies that make the
// new pages file, in order.
func mergeEntries(inc, parent *Pagemap) ([]Entry, []segment, error) {
	// Byte offset of each parent entry's data in the parent's pages file.
	pOff := make([]uint64, len(parent.Entries))
	var o uint64
	for i, e := range parent.Entries {
		pOff[i] = o
		if e.Flags&FlagPresent != 0 {
			o += e.NrPages * pageSize
		}
	}
	var out []Entry
	var segs []segment
	emit := func(e Entry, fromParent bool, off uint64) {
		if n := len(out); n > 0 && out[n-1].End() == e.Vaddr && out[n-1].Flags == e.Flags {
			out[n-1].NrPages += e.NrPages
		} else {
			out = append(out, e)
		}
		l := e.NrPages * pageSize
		if n := len(segs); n > 0 && segs[n-1].fromParent == fromParent && segs[n-1].off+segs[n-1].len == off {
			segs[n-1].len += l
		} else {
			segs = append(segs, segment{fromParent: fromParent, off: off, len: l})
		}
	}
	var own uint64
	for _, e := range inc.Entries {
		switch {
		case e.Flags&FlagPresent != 0:
			emit(e, false, own)
			own += e.NrPages * pageSize
		case e.Flags&FlagParent != 0:
			// A hole may span several parent entries and begin or end
			// inside one.
			start, end := e.Vaddr, e.End()
			i := sort.Search(len(parent.Entries), func(i int) bool { return parent.Entries[i].End() > start })
			for ; start < end; i++ {
				if i == len(parent.Entries) || parent.Entries[i].Vaddr > start {
					gap := end
					if i < len(parent.Entries) {
						gap = min(gap, parent.Entries[i].Vaddr)
					}
					return nil, nil, fmt.Errorf("pages %#x-%#x of the hole %v are not in the parent", start, gap, e)
				}
				p := parent.Entries[i]
				t := min(end, p.End())
				if p.Flags&FlagPresent == 0 {
					return nil, nil, fmt.Errorf("pages %#x-%#x of the hole %v have no data in the parent (entry %v)", start, t, e, p)
				}
				emit(Entry{Vaddr: start, NrPages: (t - start) / pageSize, Flags: p.Flags}, true, pOff[i]+start-p.Vaddr)
				start = t
			}
		default:
			return nil, nil, fmt.Errorf("entry %v is lazy only: its data is in no image", e)
		}
	}
	return out, segs, nil
}

// write writes the new pages file and pagemap under temporary names.
func (pl *mergePlan) write(st *MergeStats) error {
	own, err := os.Open(pl.ownPages)
	if err != nil {
		return err
	}
	defer own.Close()
	parent, err := os.Open(pl.parentPages)
	if err != nil {
		return err
	}
	defer parent.Close()

	pages, err := pl.createPages()
	if err != nil {
		return err
	}
	pl.tmpPages = pages.Name()
	defer pages.Close()
	dst, err := writeSegments(pages, own, parent, pl.segs)
	if err != nil {
		return err
	}
	if err := finishTemp(pages, pl.pagesMode); err != nil {
		return err
	}

	pm, err := os.CreateTemp(pl.dir, ".merge-pagemap-*.tmp")
	if err != nil {
		return err
	}
	pl.tmpPagemap = pm.Name()
	defer pm.Close()
	b := pl.merged.Encode()
	if _, err := pm.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", pm.Name(), err)
	}
	if err := finishTemp(pm, pl.pagemapMode); err != nil {
		return err
	}
	st.Bytes += dst + int64(len(b))
	st.ParentPages += pl.parentCount
	st.OwnPages += pl.ownCount
	return nil
}

// createPages makes the temporary new pages file: the spare, renamed, if
// there is one that can be (else it is removed), or a new file. Dot names:
// no pagemap-*.img or pages-*.img glob matches them.
func (pl *mergePlan) createPages() (*os.File, error) {
	if pl.spare != "" {
		spare := pl.spare
		pl.spare = ""
		tmp := filepath.Join(pl.dir, ".merge-pages-spare.tmp")
		if err := os.Rename(spare, tmp); err != nil {
			os.Remove(spare)
		} else if f, err := os.OpenFile(tmp, os.O_RDWR, 0); err == nil {
			return f, nil
		} else {
			os.Remove(tmp)
		}
	}
	return os.CreateTemp(pl.dir, ".merge-pages-*.tmp")
}

// finishTemp gives a temporary file the mode of the file it replaces
// (CreateTemp makes it 0600) and closes it, reporting write-back errors.
func finishTemp(f *os.File, mode fs.FileMode) error {
	if err := f.Chmod(mode); err != nil {
		return err
	}
	return f.Close()
}

// commit renames the new files into place, pages first.
func (pl *mergePlan) commit() error {
	if err := os.Rename(pl.tmpPages, pl.ownPages); err != nil {
		return err
	}
	pl.tmpPages = ""
	if err := os.Rename(pl.tmpPagemap, filepath.Join(pl.dir, pl.name)); err != nil {
		return err
	}
	pl.tmpPagemap = ""
	return nil
}

func (pl *mergePlan) removeTemps() {
	for _, p := range []string{pl.tmpPages, pl.tmpPagemap, pl.spare} {
		if p != "" {
			_ = os.Remove(p) // best effort: a stray dot file does not make dir wrong
		}
	}
}
