package ckptstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/iorrc/rrc/replication/wire"
)

// Staging is a checkpoint being received. It is used by one goroutine; it
// ends with exactly one of Commit or Abort (Commit aborts on failure).
type Staging struct {
	store  *Store
	epoch  uint64
	begin  wire.CheckpointBegin
	dir    string
	chain  []uint64
	hasher *wire.ContentHasher
	dirs   map[string]bool // directories to fsync before the rename

	file     *os.File // file being written
	path     string   // its checkpoint path
	mode     fs.FileMode
	fileSize uint64
	written  uint64 // bytes of the current file
	files    uint32 // files begun
	total    uint64 // bytes of all files
	done     bool
}

// Epoch is the epoch being received.
func (st *Staging) Epoch() uint64 { return st.epoch }

// Write stores one chunk. Chunks must come in the canonical order (see
// wire.CheckpointChunk); anything else, or more files or bytes than Begin
// announced, is ErrCorrupt.
func (st *Staging) Write(c wire.CheckpointChunk) error {
	if st.done {
		return fmt.Errorf("writing checkpoint %d: already finished", st.epoch)
	}
	if err := st.write(c); err != nil {
		return fmt.Errorf("writing %s of checkpoint %d: %w", c.Path, st.epoch, err)
	}
	return nil
}

func (st *Staging) write(c wire.CheckpointChunk) error {
	if !wire.ValidCheckpointPath(c.Path) {
		return fmt.Errorf("%w: invalid path", ErrCorrupt)
	}
	if st.file != nil && c.Path == st.path {
		if c.Mode != st.mode || c.FileSize != st.fileSize || c.Offset != st.written {
			return fmt.Errorf("%w: chunk at offset %d (size %d, mode %#o) continues %d bytes of size %d, mode %#o",
				ErrCorrupt, c.Offset, c.FileSize, c.Mode, st.written, st.fileSize, st.mode)
		}
	} else {
		if st.files > 0 && c.Path <= st.path {
			return fmt.Errorf("%w: file after %s out of canonical order", ErrCorrupt, st.path)
		}
		if c.Offset != 0 {
			return fmt.Errorf("%w: first chunk at offset %d", ErrCorrupt, c.Offset)
		}
		if err := st.closeFile(); err != nil {
			return err
		}
		if st.files == st.begin.FileCount {
			return fmt.Errorf("%w: more than the %d files announced", ErrCorrupt, st.begin.FileCount)
		}
		if err := st.openFile(c); err != nil {
			return err
		}
	}
	if st.total+uint64(len(c.Data)) > st.begin.TotalSize {
		return fmt.Errorf("%w: more than the %d bytes announced", ErrCorrupt, st.begin.TotalSize)
	}
	if _, err := st.file.Write(c.Data); err != nil {
		return err
	}
	st.hasher.Write(c.Data)
	st.written += uint64(len(c.Data))
	st.total += uint64(len(c.Data))
	return nil
}

func (st *Staging) openFile(c wire.CheckpointChunk) error {
	full := filepath.Join(st.dir, filepath.FromSlash(c.Path))
	parent := filepath.Dir(full)
	if !st.dirs[parent] {
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return err
		}
		for d := parent; d != st.dir && !st.dirs[d]; d = filepath.Dir(d) {
			st.dirs[d] = true
		}
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// The exact mode, regardless of umask: restore needs it.
	if err := f.Chmod(c.Mode); err != nil {
		f.Close()
		return err
	}
	st.file, st.path, st.mode, st.fileSize, st.written = f, c.Path, c.Mode, c.FileSize, 0
	st.files++
	st.hasher.BeginFile(c.Path, c.Mode, c.FileSize)
	return nil
}

// closeFile finishes the current file: it must be complete, and it is made
// durable before it can be part of a committed checkpoint.
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
	if err := f.Sync(); err != nil {
		f.Close()
		return err
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
	if st.files != st.begin.FileCount || st.total != st.begin.TotalSize {
		return Checkpoint{}, fmt.Errorf("%w: received %d files, %d bytes; announced %d files, %d bytes",
			ErrCorrupt, st.files, st.total, st.begin.FileCount, st.begin.TotalSize)
	}
	if sum := st.hasher.Sum(); sum != digest {
		return Checkpoint{}, fmt.Errorf("%w: SHA-256 %x, primary says %x", ErrCorrupt, sum[:8], digest[:8])
	}
	for d := range st.dirs {
		if err := syncDir(d); err != nil {
			return Checkpoint{}, err
		}
	}
	s := st.store
	final := s.path(checkpointsDir, epochName(st.epoch))
	if err := os.RemoveAll(final); err != nil { // a leftover of a crash before a manifest swap
		return Checkpoint{}, err
	}
	if err := os.Rename(st.dir, final); err != nil {
		return Checkpoint{}, err
	}
	if err := syncDir(s.path(checkpointsDir)); err != nil {
		return Checkpoint{}, err
	}
	if err := syncDir(s.path(stagingDir)); err != nil {
		return Checkpoint{}, err
	}
	c := &Checkpoint{Epoch: st.epoch, BaseEpoch: st.begin.BaseEpoch, Dir: final, Size: st.total, Files: st.files,
		Digest: digest, CommittedAt: time.Now(), Chain: st.chain}
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
	s.current, s.staging = c, nil
	s.mu.Unlock()
	st.done = true
	var prevEpoch uint64
	if prev != nil {
		prevEpoch = prev.Epoch
	}
	s.log.Info("checkpoint committed", "epoch", c.Epoch, "previous", prevEpoch, "size", c.Size, "files", c.Files,
		"commit", time.Since(start))
	s.mu.Lock()
	s.removeUnneeded()
	s.mu.Unlock()
	out := *c
	return out, nil
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
