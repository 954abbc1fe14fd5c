// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/beneath"
)

// Staging is a checkpoint being received. It is used by one goroutine; it
// ends with exactly one of Commit or Abort (Commit aborts on failure).
type Staging struct {
	store *Store
	epoch uint64
	begin wire.CheckpointBegin
	dir   string
	// root is dir, opened: the files are created beneath it (their names
	// come from the peer), never through a symlink or "..".
	root   *beneath.Dir
	base   *deltaBase // nil: a full checkpoint
	hasher *wire.ContentHasher
	dirs   map[string]bool       // directories to fsync before the rename
	blocks map[string]fileBlocks // of the files received, for the next delta
	// inPlace is what the staging directory held when it was begun: the
	// files of an older checkpoint (the store's spare), rewritten in place
	// so that blocks they have already are not written again. Empty for a
	// new directory.
	inPlace map[string]fileBlocks
	had     fileBlocks // inPlace's entry for the current file

	file     *os.File // file being written
	path     string   // its checkpoint path
	mode     fs.FileMode
	fileSize uint64
	written  uint64 // bytes of the current file
	files    uint32 // files begun
	total    uint64 // bytes of all files
	copied   uint64 // bytes copied from the base
	done     bool
}

// deltaBase is the committed checkpoint a delta copies its unchanged blocks
// from.
type deltaBase struct {
	epoch uint64
	dir   string
	files map[string]fileBlocks
	open  *os.File // the base file copied from last
	name  string   // its path
}

// Epoch is the epoch being received.
func (st *Staging) Epoch() uint64 { return st.epoch }

// Write stores one chunk. Chunks and copies must come in the canonical order
// (see wire.CheckpointChunk); anything else, or more files or bytes than
// Begin announced, is ErrCorrupt.
func (st *Staging) Write(c wire.CheckpointChunk) error {
	if err := st.next(c.Path, c.Mode, c.FileSize, c.Offset, uint64(len(c.Data))); err != nil {
		return fmt.Errorf("writing %s of checkpoint %d: %w", c.Path, st.epoch, err)
	}
	if _, err := st.file.WriteAt(c.Data, int64(c.Offset)); err != nil {
		return fmt.Errorf("writing %s of checkpoint %d: %w", c.Path, st.epoch, err)
	}
	st.hasher.Write(c.Data)
	st.advance(uint64(len(c.Data)))
	return nil
}

// Copy stores a range copied from the base checkpoint, which must hold it:
// a full checkpoint has no base, and a range beyond the base file's end, or
// a short last block that is not the base file's last, is ErrCorrupt. The
// digests of the copied blocks are the base's, verified when it was
// committed.
func (st *Staging) Copy(c wire.CheckpointCopy) error {
	if err := st.copy(c); err != nil {
		return fmt.Errorf("copying %s of checkpoint %d from %s of the base: %w", c.Path, st.epoch, c.BasePath, err)
	}
	return nil
}

func (st *Staging) copy(c wire.CheckpointCopy) error {
	b := st.base
	if b == nil {
		return fmt.Errorf("%w: a copy in a full checkpoint", ErrCorrupt)
	}
	bf, ok := b.files[c.BasePath]
	switch {
	case !ok:
		return fmt.Errorf("%w: the base (checkpoint %d) has no such file", ErrCorrupt, b.epoch)
	case c.BaseOffset > bf.size || c.Length > bf.size-c.BaseOffset:
		return fmt.Errorf("%w: %d bytes at %d overrun the base file of %d bytes", ErrCorrupt, c.Length, c.BaseOffset, bf.size)
	case c.Length%wire.BlockSize != 0 && c.BaseOffset+c.Length != bf.size:
		return fmt.Errorf("%w: a short block that is not the base file's last", ErrCorrupt)
	case c.Offset%wire.BlockSize != 0 || c.BaseOffset%wire.BlockSize != 0:
		return fmt.Errorf("%w: offsets not block aligned", ErrCorrupt)
	}
	if err := st.next(c.Path, c.Mode, c.FileSize, c.Offset, c.Length); err != nil {
		return err
	}
	src, err := b.file(c.BasePath)
	if err != nil {
		return err
	}
	// Blocks the file being rewritten in place has already are skipped;
	// runs of the others are copied in the kernel.
	first, dst := int(c.BaseOffset/wire.BlockSize), int(c.Offset/wire.BlockSize)
	var runFrom, runLen int64 = -1, 0
	flush := func() error {
		if runLen == 0 {
			return nil
		}
		err := copyRange(st.file, runFrom-int64(c.BaseOffset)+int64(c.Offset), src, runFrom, runLen)
		runFrom, runLen = -1, 0
		return err
	}
	for k, left := 0, c.Length; left > 0; k++ {
		n := min(left, wire.BlockSize)
		d := bf.digest[first+k]
		if dst+k < len(st.had.digest) && st.had.digest[dst+k] == d {
			if err := flush(); err != nil {
				return err
			}
		} else {
			if runLen == 0 {
				runFrom = int64(c.BaseOffset) + int64(k)*wire.BlockSize
			}
			runLen += int64(n)
		}
		st.hasher.AddBlock(d, int(n))
		left -= n
	}
	if err := flush(); err != nil {
		return err
	}
	st.advance(c.Length)
	st.copied += c.Length
	return nil
}

// file opens a file of the base, keeping the last one open (a delta copies
// many ranges of few files).
func (b *deltaBase) file(path string) (*os.File, error) {
	if b.open != nil && b.name == path {
		return b.open, nil
	}
	b.close()
	root, err := beneath.Open(b.dir)
	if err != nil {
		return nil, fmt.Errorf("opening the base: %w", err)
	}
	f, err := root.OpenFile(path, os.O_RDONLY, 0)
	root.Close()
	if err != nil {
		return nil, fmt.Errorf("opening the base's file: %w", err)
	}
	b.open, b.name = f, path
	return f, nil
}

func (b *deltaBase) close() {
	if b != nil && b.open != nil {
		b.open.Close()
		b.open = nil
	}
}

// next checks that n bytes at offset of path continue the checkpoint in
// the canonical order, opening the file if it is the next one.
func (st *Staging) next(path string, mode fs.FileMode, fileSize, offset, n uint64) error {
	if st.done {
		return errors.New("already finished")
	}
	if !wire.ValidCheckpointPath(path) {
		return fmt.Errorf("%w: invalid path", ErrCorrupt)
	}
	if st.file != nil && path == st.path {
		if mode != st.mode || fileSize != st.fileSize || offset != st.written {
			return fmt.Errorf("%w: data at offset %d (size %d, mode %#o) continues %d bytes of size %d, mode %#o",
				ErrCorrupt, offset, fileSize, mode, st.written, st.fileSize, st.mode)
		}
	} else {
		if st.files > 0 && path <= st.path {
			return fmt.Errorf("%w: file after %s out of canonical order", ErrCorrupt, st.path)
		}
		if offset != 0 {
			return fmt.Errorf("%w: first data at offset %d", ErrCorrupt, offset)
		}
		if err := st.closeFile(); err != nil {
			return err
		}
		if st.files == st.begin.FileCount {
			return fmt.Errorf("%w: more than the %d files announced", ErrCorrupt, st.begin.FileCount)
		}
		if err := st.openFile(path, mode, fileSize); err != nil {
			return err
		}
	}
	if n > fileSize-offset {
		return fmt.Errorf("%w: %d bytes at %d overrun the file size %d", ErrCorrupt, n, offset, fileSize)
	}
	if st.total+n > st.begin.TotalSize {
		return fmt.Errorf("%w: more than the %d bytes announced", ErrCorrupt, st.begin.TotalSize)
	}
	return nil
}

// copyRange copies n bytes at srcOff of src to dstOff of dst, in the kernel
// where it can (copy_file_range), else through a buffer.
func copyRange(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	for n > 0 {
		so, do := srcOff, dstOff
		c, err := unix.CopyFileRange(int(src.Fd()), &so, int(dst.Fd()), &do, int(n), 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				break
			}
			return fmt.Errorf("copying from the base: %w", err)
		}
		if c == 0 {
			return fmt.Errorf("%w: the base file ends before its known size", ErrCorrupt)
		}
		srcOff, dstOff, n = srcOff+int64(c), dstOff+int64(c), n-int64(c)
	}
	if n == 0 {
		return nil
	}
	w, err := io.Copy(io.NewOffsetWriter(dst, dstOff), io.NewSectionReader(src, srcOff, n))
	if err != nil {
		return fmt.Errorf("copying from the base: %w", err)
	}
	if w != n {
		return fmt.Errorf("%w: the base file ends before its known size", ErrCorrupt)
	}
	return nil
}

func (st *Staging) advance(n uint64) {
	st.written += n
	st.total += n
}

func (st *Staging) openFile(path string, mode fs.FileMode, size uint64) error {
	full := filepath.Join(st.dir, filepath.FromSlash(path))
	parent := filepath.Dir(full)
	if !st.dirs[parent] {
		rel, err := filepath.Rel(st.dir, parent)
		if err != nil {
			return err
		}
		if err := st.root.MkdirAll(filepath.ToSlash(rel), 0o700); err != nil {
			return err
		}
		for d := parent; d != st.dir && !st.dirs[d]; d = filepath.Dir(d) {
			st.dirs[d] = true
		}
	}
	// An existing file is the spare's: rewritten in place, at the new size.
	f, err := st.root.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	had := st.inPlace[path]
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) != size {
		if err == nil {
			err = f.Truncate(int64(size))
		}
		if err != nil {
			f.Close()
			return err
		}
	}
	// The exact mode, regardless of umask: restore needs it.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	st.file, st.path, st.mode, st.fileSize, st.written, st.had = f, path, mode, size, 0, had
	st.files++
	st.hasher.BeginFile(path, mode, size)
	return nil
}

// closeFile finishes the current file: it must be complete; it is made
// durable (if the store is) before it can be part of a committed checkpoint.
func (st *Staging) closeFile() error {
	if st.file == nil {
		return nil
	}
	f := st.file
	st.file = nil
	if st.written != st.fileSize {
		f.Close()
		return fmt.Errorf("%w: %s has %d of %d bytes", ErrCorrupt, st.path, st.written, st.fileSize)
	}
	st.blocks[st.path] = fileBlocks{size: st.fileSize, digest: st.hasher.FileBlocks()}
	if st.store.durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// Commit verifies the checkpoint against the announced size and file count
// and the digest the primary computed, and makes it current. On any failure
// the staging copy is removed and the previous checkpoint stays current.
func (st *Staging) Commit(digest [32]byte) (Checkpoint, error) {
	if st.done {
		return Checkpoint{}, fmt.Errorf("committing checkpoint %d: already finished", st.epoch)
	}
	c, err := st.commit(digest)
	if err != nil {
		st.Abort(err.Error())
		return Checkpoint{}, fmt.Errorf("committing checkpoint %d: %w", st.epoch, err)
	}
	return c, nil
}

func (st *Staging) commit(digest [32]byte) (Checkpoint, error) {
	start := time.Now()
	if err := st.closeFile(); err != nil {
		return Checkpoint{}, err
	}
	st.base.close()
	if st.files != st.begin.FileCount || st.total != st.begin.TotalSize {
		return Checkpoint{}, fmt.Errorf("%w: received %d files, %d bytes; announced %d files, %d bytes",
			ErrCorrupt, st.files, st.total, st.begin.FileCount, st.begin.TotalSize)
	}
	if sum := st.hasher.Sum(); sum != digest {
		return Checkpoint{}, fmt.Errorf("%w: SHA-256 %x, primary says %x", ErrCorrupt, sum[:8], digest[:8])
	}
	for p := range st.inPlace { // the spare's files this checkpoint does not have
		if _, ok := st.blocks[p]; !ok {
			if err := st.root.Remove(p); err != nil {
				return Checkpoint{}, fmt.Errorf("removing %s left from an older checkpoint: %w", p, err)
			}
		}
	}
	s := st.store
	if err := st.root.Close(); err != nil {
		return Checkpoint{}, err
	}
	for d := range st.dirs {
		if err := s.syncDir(d); err != nil {
			return Checkpoint{}, err
		}
	}
	final := s.path(checkpointsDir, epochName(st.epoch))
	if err := os.RemoveAll(final); err != nil { // a leftover of a crash before a manifest swap
		return Checkpoint{}, err
	}
	if err := os.Rename(st.dir, final); err != nil {
		return Checkpoint{}, err
	}
	if err := s.syncDir(s.path(checkpointsDir)); err != nil {
		return Checkpoint{}, err
	}
	if err := s.syncDir(s.path(stagingDir)); err != nil {
		return Checkpoint{}, err
	}
	c := &Checkpoint{Epoch: st.epoch, BaseEpoch: st.begin.BaseEpoch, Dir: final, Size: st.total, Files: st.files,
		Digest: digest, CommittedAt: time.Now(), Copied: st.copied}
	st.dir = final // Abort must now remove the renamed directory
	if swapped, err := s.writeManifest(c); err != nil {
		if !swapped {
			return Checkpoint{}, fmt.Errorf("switching current checkpoint: %w", err)
		}
		// The manifest names the new checkpoint already: it is current on
		// disk and must not be removed, only reported.
		s.log.Error("checkpoint current, but syncing the store directory failed", "epoch", st.epoch, "err", err)
	}
	s.mu.Lock()
	prev := s.current
	if prev != nil && s.blocks != nil {
		s.spare = &spare{dir: prev.Dir, files: s.blocks}
	}
	s.current, s.staging, s.blocks = c, nil, st.blocks
	s.mu.Unlock()
	st.done = true
	var prevEpoch uint64
	if prev != nil {
		prevEpoch = prev.Epoch
	}
	s.log.Debug("checkpoint committed", "epoch", c.Epoch, "previous", prevEpoch, "size", c.Size, "copied", c.Copied,
		"files", c.Files, "commit", time.Since(start))
	s.mu.Lock()
	s.removeUnneeded()
	s.mu.Unlock()
	return *c, nil
}

// Abort discards the checkpoint being received; the current one stays.
func (st *Staging) Abort(reason string) {
	if st.done {
		return
	}
	st.done = true
	if st.file != nil {
		st.file.Close()
		st.file = nil
	}
	st.base.close()
	st.root.Close()
	s := st.store
	if err := os.RemoveAll(st.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("removing aborted checkpoint", "epoch", st.epoch, "dir", st.dir, "err", err)
	}
	s.mu.Lock()
	if s.staging == st {
		s.staging = nil
	}
	s.mu.Unlock()
	s.log.Warn("checkpoint discarded; previous stays current", "epoch", st.epoch, "current", s.CurrentEpoch(), "reason", reason)
}
