// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/iorrc/rrc/replication/wire"
)

// Verify reads the checkpoint's files back from disk and checks them
// against what was verified when it was committed: the number of files,
// their total size and the canonical SHA-256 content digest (paths, modes,
// sizes and content; see wire.ContentHasher). The promotion calls it right
// before a restore, so that a checkpoint damaged on disk after its commit
// (a bad disk, an operator, a bug) is refused rather than restored. A
// mismatch is ErrCorrupt; an unreadable file is reported as it is.
//
// Only the checkpoint's own directory is checked: the manifest keeps the
// digest of the current checkpoint alone, so the bases of an incremental
// one were verified when they were committed but are not here.
func (c Checkpoint) Verify() error {
	if err := c.verify(); err != nil {
		return fmt.Errorf("verifying checkpoint %d in %s: %w", c.Epoch, c.Dir, err)
	}
	return nil
}

func (c Checkpoint) verify() error {
	type file struct {
		path string // slash-separated, relative to Dir
		mode fs.FileMode
		size int64
	}
	var files []file
	err := filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(c.Dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file (%s)", ErrCorrupt, rel, fi.Mode().Type())
		}
		files = append(files, file{path: rel, mode: fi.Mode().Perm(), size: fi.Size()})
		return nil
	})
	if err != nil {
		return err
	}
	// The canonical order is increasing byte order of the whole path, which
	// is not the walk's (a/b comes before a.x in the walk).
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.path, b.path) })
	var total uint64
	for _, f := range files {
		total += uint64(f.size)
	}
	if uint32(len(files)) != c.Files || total != c.Size || len(files) > int(^uint32(0)) {
		return fmt.Errorf("%w: %d files, %d bytes on disk; %d files, %d bytes committed", ErrCorrupt, len(files), total, c.Files, c.Size)
	}
	h := wire.NewContentHasher()
	for _, f := range files {
		h.BeginFile(f.path, f.mode, uint64(f.size))
		if err := hashFile(h, filepath.Join(c.Dir, filepath.FromSlash(f.path)), f.size); err != nil {
			return err
		}
	}
	if sum := h.Sum(); sum != c.Digest {
		return fmt.Errorf("%w: SHA-256 of the files on disk is %x, the committed digest %x", ErrCorrupt, sum[:8], c.Digest[:8])
	}
	return nil
}

// hashFile adds exactly size bytes of path to h: a file that changed size
// since it was listed is corrupt too.
func hashFile(h io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%w: %s changed size while being verified", ErrCorrupt, path)
	}
	return nil
}

// Scrub checks the next part of the current checkpoint's files on disk
// against the block digests it was committed with, about budget bytes,
// resuming where the previous call stopped (also across commits: the
// blocks a delta copied are the base's, so a block damaged on disk would
// otherwise be carried from checkpoint to checkpoint). Damage found is
// ErrCorrupt: the store then forgets the block digests and the spare, so
// that the next delta is refused (base missing) and the primary sends a
// full checkpoint, which replaces every block. The receiver calls it after
// each acknowledgement; a promotion verifies the whole checkpoint anyway.
func (s *Store) Scrub(budget uint64) error {
	s.mu.Lock()
	cur, blocks := s.current, s.blocks
	s.mu.Unlock()
	if cur == nil || blocks == nil || len(blocks) == 0 {
		return nil
	}
	paths := make([]string, 0, len(blocks))
	for p := range blocks {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	i, _ := slices.BinarySearch(paths, s.scrubPath)
	block := s.scrubBlock
	if i == len(paths) || paths[i] != s.scrubPath {
		block = 0
	}
	buf := make([]byte, wire.BlockSize)
	var done uint64
	for n := 0; done < budget && n <= len(paths); n++ {
		if i == len(paths) {
			i, block = 0, 0 // wrap around
		}
		p := paths[i]
		fb := blocks[p]
		bad, checked, err := scrubFile(filepath.Join(cur.Dir, filepath.FromSlash(p)), fb, block, budget-done, buf)
		done += checked
		if err != nil || bad >= 0 {
			s.mu.Lock()
			if s.current == cur {
				s.blocks = nil
				if s.spare != nil {
					os.RemoveAll(s.spare.dir)
					s.spare = nil
				}
			}
			s.mu.Unlock()
			if err == nil {
				err = fmt.Errorf("%w: block %d of %s differs from its digest", ErrCorrupt, bad, p)
			}
			s.scrubPath, s.scrubBlock = "", 0
			s.log.Error("checkpoint damaged on disk; the next checkpoint must come in full", "epoch", cur.Epoch, "err", err)
			return fmt.Errorf("scrubbing checkpoint %d: %w", cur.Epoch, err)
		}
		block += int(checked / wire.BlockSize)
		if checked%wire.BlockSize != 0 || block >= len(fb.digest) {
			i, block = i+1, 0
		}
	}
	if i < len(paths) {
		s.scrubPath, s.scrubBlock = paths[i], block
	} else {
		s.scrubPath, s.scrubBlock = "", 0
	}
	return nil
}

// scrubFile checks blocks of path from block first, at most budget bytes
// (at least one block). It returns the first bad block (-1: none) and the
// bytes checked.
func scrubFile(path string, fb fileBlocks, first int, budget uint64, buf []byte) (bad int, checked uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return -1, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) != fb.size {
		return -1, 0, fmt.Errorf("%w: %s changed size", ErrCorrupt, path)
	}
	for b := first; b < len(fb.digest) && (checked == 0 || checked < budget); b++ {
		n := min(uint64(wire.BlockSize), fb.size-uint64(b)*wire.BlockSize)
		if _, err := f.ReadAt(buf[:n], int64(b)*wire.BlockSize); err != nil {
			return -1, checked, fmt.Errorf("%w: reading %s: %v", ErrCorrupt, path, err)
		}
		if wire.HashBlock(buf[:n]) != fb.digest[b] {
			return b, checked, nil
		}
		checked += n
	}
	return -1, checked, nil
}
