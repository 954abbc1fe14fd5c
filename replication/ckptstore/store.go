// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package ckptstore is the backup's store of checkpoints received from the
// primary. It never lets a partial or unverified checkpoint become current
// (invariant 3 of docs/ARCHITECTURE.md): a checkpoint is written into a
// staging directory, checked against the announced size and the end-to-end
// SHA-256, made durable, moved into place with a rename, and only then does
// an atomically replaced manifest (current.json) point to it. The previous checkpoint stays until
// that has happened.
//
// Layout under the root:
//
//	staging/<epoch>/          a checkpoint being received (removed at Open)
//	checkpoints/<epoch>/      committed checkpoints (epoch zero-padded)
//	current.json              the manifest of the current checkpoint
package ckptstore

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/beneath"
)

// Errors a caller maps to a refusal of the checkpoint. Other errors are
// local storage failures.
var (
	ErrEpochOrder  = errors.New("checkpoint epoch not above the current one")
	ErrCorrupt     = errors.New("checkpoint corrupt")
	ErrBaseMissing = errors.New("base checkpoint not held")
	ErrBusy        = errors.New("another checkpoint is being received")
	ErrNoSpace     = errors.New("not enough space for the checkpoint")
)

// Checkpoint describes a committed checkpoint. It is complete by itself,
// also when it was received as a delta.
type Checkpoint struct {
	Epoch uint64
	// BaseEpoch is the checkpoint it was received as a delta against (its
	// unchanged blocks were copied from there), 0 if it came in full.
	BaseEpoch   uint64
	Dir         string // absolute path of its files
	Size        uint64
	Files       uint32
	Digest      [32]byte
	CommittedAt time.Time
	// Copied is how many of Size bytes were copied from the base rather
	// than received.
	Copied uint64
}

// Options configure a Store.
type Options struct {
	Logger *slog.Logger // should carry the pair ID; nil: slog.Default()
	// Durable fsyncs every file and directory before a checkpoint becomes
	// current. Without it a checkpoint survives a crash of the backup's
	// shim but not necessarily of its host; that costs nothing in safety
	// (a torn checkpoint fails the verification before any restore, and a
	// backup host that crashed has no primary connection to fail over
	// anyway) and saves writing every epoch to the disk.
	Durable bool
}

// Store is the checkpoint store of one pair on the backup.
type Store struct {
	root    string
	log     *slog.Logger
	durable bool

	mu      sync.Mutex
	current *Checkpoint
	staging *Staging
	// blocks are the block digests of the current checkpoint's files, by
	// path; nil when unknown (reopened store): deltas are then refused.
	blocks map[string]fileBlocks
	// spare is the checkpoint before the current one, kept to be rewritten
	// in place into the next: from one epoch to the next most blocks are
	// the same, so the next checkpoint costs the blocks that changed in
	// two epochs, not a copy of everything (and no file is deleted and
	// reallocated each epoch). nil: none.
	spare *spare
	// Where Scrub goes on (the receiver's goroutine only).
	scrubPath  string
	scrubBlock int
}

type spare struct {
	dir   string
	files map[string]fileBlocks
}

// fileBlocks is what a delta needs of a file of its base.
type fileBlocks struct {
	size   uint64
	digest []wire.BlockDigest
}

const (
	stagingDir     = "staging"
	checkpointsDir = "checkpoints"
	manifestName   = "current.json"
)

// Open opens (creating it if needed) the store at root and recovers from a
// crash: staging directories and a half-written manifest are removed, and so
// are committed directories the manifest does not need (a crash between the
// rename into checkpoints/ and the manifest swap leaves one behind).
func Open(root string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("opening checkpoint store %s: %w", root, err)
	}
	s := &Store{root: root, log: log.With("store", root), durable: opts.Durable}
	for _, d := range []string{root, s.path(stagingDir), s.path(checkpointsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("opening checkpoint store: %w", err)
		}
	}
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("recovering checkpoint store %s: %w", root, err)
	}
	return s, nil
}

func (s *Store) recover() error {
	entries, err := os.ReadDir(s.path(stagingDir))
	if err != nil {
		return err
	}
	for _, e := range entries {
		s.log.Warn("removing stale staging directory", "dir", e.Name())
		if err := os.RemoveAll(s.path(stagingDir, e.Name())); err != nil {
			return fmt.Errorf("removing stale staging directory: %w", err)
		}
	}
	if err := os.Remove(s.path(manifestName + ".tmp")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	cur, err := s.readManifest()
	if err != nil {
		return err
	}
	s.current = cur
	if cur != nil {
		s.log.Info("current checkpoint", "epoch", cur.Epoch, "size", cur.Size, "files", cur.Files)
	}
	s.removeUnneeded()
	return nil
}

// Current returns the current committed checkpoint, if any.
func (s *Store) Current() (Checkpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return Checkpoint{}, false
	}
	return *s.current, true
}

// CurrentEpoch is the epoch of the current checkpoint, 0 if none.
func (s *Store) CurrentEpoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return 0
	}
	return s.current.Epoch
}

// Begin starts receiving the checkpoint of epoch. Only one checkpoint is
// received at a time.
func (s *Store) Begin(epoch uint64, b wire.CheckpointBegin) (*Staging, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staging != nil {
		return nil, fmt.Errorf("beginning checkpoint %d: %w (epoch %d)", epoch, ErrBusy, s.staging.epoch)
	}
	var cur uint64
	if s.current != nil {
		cur = s.current.Epoch
	}
	if epoch <= cur {
		return nil, fmt.Errorf("beginning checkpoint %d: %w (current is %d)", epoch, ErrEpochOrder, cur)
	}
	// A delta may only build on the current checkpoint, whose blocks are
	// known: the store keeps nothing else.
	var base *deltaBase
	if b.BaseEpoch != 0 {
		if b.BaseEpoch != cur {
			return nil, fmt.Errorf("beginning checkpoint %d on base %d: %w (current is %d)", epoch, b.BaseEpoch, ErrBaseMissing, cur)
		}
		if s.blocks == nil {
			return nil, fmt.Errorf("beginning checkpoint %d on base %d: %w (its block digests are not known since the store was reopened)",
				epoch, b.BaseEpoch, ErrBaseMissing)
		}
		base = &deltaBase{epoch: cur, dir: s.current.Dir, files: s.blocks}
	}
	var reuse uint64 // bytes of the spare, rewritten in place
	if s.spare != nil {
		for _, f := range s.spare.files {
			reuse += f.size
		}
	}
	if free, ok := freeBytes(s.root); ok && free+reuse < b.TotalSize {
		return nil, fmt.Errorf("beginning checkpoint %d of %d bytes: %w (%d free)", epoch, b.TotalSize, ErrNoSpace, free+reuse)
	}
	dir := s.path(stagingDir, epochName(epoch))
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("beginning checkpoint %d: %w", epoch, err)
	}
	inPlace, reused := map[string]fileBlocks{}, false
	if sp := s.spare; sp != nil {
		s.spare = nil
		if err := os.Rename(sp.dir, dir); err != nil {
			s.log.Warn("reusing the previous checkpoint's directory failed; writing a new one", "err", err)
			os.RemoveAll(sp.dir)
		} else {
			inPlace, reused = sp.files, true
		}
	}
	if !reused {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, fmt.Errorf("beginning checkpoint %d: %w", epoch, err)
		}
	}
	root, err := beneath.Open(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("beginning checkpoint %d: %w", epoch, err)
	}
	st := &Staging{store: s, epoch: epoch, begin: b, dir: dir, root: root, base: base, blocks: map[string]fileBlocks{}, inPlace: inPlace,
		hasher: wire.NewBlockKeepingHasher(), dirs: map[string]bool{dir: true}}
	s.staging = st
	return st, nil
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

func epochName(epoch uint64) string { return fmt.Sprintf("%020d", epoch) }

// manifest is the JSON form of Checkpoint in current.json.
type manifest struct {
	Epoch       uint64    `json:"epoch"`
	BaseEpoch   uint64    `json:"base_epoch,omitempty"`
	Dir         string    `json:"dir"` // relative to the store root
	Size        uint64    `json:"size"`
	Files       uint32    `json:"files"`
	Digest      string    `json:"sha256"`
	CommittedAt time.Time `json:"committed_at"`
	Copied      uint64    `json:"copied,omitempty"`
}

func (s *Store) readManifest() (*Checkpoint, error) {
	b, err := os.ReadFile(s.path(manifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", s.path(manifestName), err)
	}
	c := &Checkpoint{Epoch: m.Epoch, BaseEpoch: m.BaseEpoch, Dir: s.path(m.Dir), Size: m.Size, Files: m.Files,
		CommittedAt: m.CommittedAt, Copied: m.Copied}
	d, err := hex.DecodeString(m.Digest)
	if err != nil || len(d) != 32 || m.Epoch == 0 || m.Dir != filepath.Join(checkpointsDir, epochName(m.Epoch)) {
		return nil, fmt.Errorf("manifest %s is malformed", s.path(manifestName))
	}
	copy(c.Digest[:], d)
	if _, err := os.Stat(c.Dir); err != nil {
		return nil, fmt.Errorf("manifest names checkpoint %d: %w", c.Epoch, err)
	}
	return c, nil
}

// writeManifest replaces current.json atomically: write a temporary file,
// fsync it, rename it over the old one, fsync the directory. swapped reports
// whether the rename happened (the new manifest is in place).
func (s *Store) writeManifest(c *Checkpoint) (swapped bool, err error) {
	m := manifest{Epoch: c.Epoch, BaseEpoch: c.BaseEpoch, Dir: filepath.Join(checkpointsDir, epochName(c.Epoch)),
		Size: c.Size, Files: c.Files, Digest: hex.EncodeToString(c.Digest[:]), CommittedAt: c.CommittedAt, Copied: c.Copied}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return false, err
	}
	tmp := s.path(manifestName + ".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil && s.durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(manifestName))
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, s.syncDir(s.root)
}

// removeUnneeded deletes committed directories other than the current one
// and the spare.
// Failures are logged, not returned: a leftover costs space, not safety.
func (s *Store) removeUnneeded() {
	entries, err := os.ReadDir(s.path(checkpointsDir))
	if err != nil {
		s.log.Error("listing committed checkpoints", "err", err)
		return
	}
	for _, e := range entries {
		epoch, err := strconv.ParseUint(e.Name(), 10, 64)
		if err == nil && s.current != nil && epoch == s.current.Epoch {
			continue
		}
		if s.spare != nil && s.path(checkpointsDir, e.Name()) == s.spare.dir {
			continue
		}
		if err := os.RemoveAll(s.path(checkpointsDir, e.Name())); err != nil {
			s.log.Error("removing old checkpoint", "dir", e.Name(), "err", err)
		}
	}
}

// syncDir makes dir's entries durable, if the store is.
func (s *Store) syncDir(dir string) error {
	if !s.durable {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
