// Package ckptstore is the backup's store of checkpoints received from the
// primary. It never lets a partial or unverified checkpoint become current
// (invariant 3): a checkpoint is written into a staging directory, checked
// against the announced size and the end-to-end SHA-256, made durable, moved
// into place with a rename, and only then does an atomically replaced
// manifest (current.json) point to it. The previous checkpoint stays until
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
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/wire"
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

// Checkpoint describes a committed checkpoint.
type Checkpoint struct {
	Epoch       uint64
	BaseEpoch   uint64 // 0: full checkpoint
	Dir         string // absolute path of its files
	Size        uint64
	Files       uint32
	Digest      [32]byte
	CommittedAt time.Time
	// Chain lists the epochs whose directories this checkpoint needs: itself,
	// then its base, the base's base, ... They are all kept.
	Chain []uint64
}

// Store is the checkpoint store of one pair on the backup.
type Store struct {
	root string
	log  *slog.Logger

	mu      sync.Mutex
	current *Checkpoint
	staging *Staging
}

const (
	stagingDir     = "staging"
	checkpointsDir = "checkpoints"
	manifestName   = "current.json"
)

// Open opens (creating it if needed) the store at root and recovers from a
// crash: staging directories and a half-written manifest are removed, and so
// are committed directories the manifest does not need (a crash between the
// rename into checkpoints/ and the manifest swap leaves one behind). log
// should carry the pair ID.
func Open(root string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("opening checkpoint store %s: %w", root, err)
	}
	s := &Store{root: root, log: log.With("store", root)}
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
	c := *s.current
	c.Chain = slices.Clone(c.Chain)
	return c, true
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
	var chain []uint64
	if s.current != nil {
		cur, chain = s.current.Epoch, s.current.Chain
	}
	if epoch <= cur {
		return nil, fmt.Errorf("beginning checkpoint %d: %w (current is %d)", epoch, ErrEpochOrder, cur)
	}
	// An incremental checkpoint may only build on the current one: the
	// store keeps the current chain and nothing else.
	if b.BaseEpoch != 0 && b.BaseEpoch != cur {
		return nil, fmt.Errorf("beginning checkpoint %d on base %d: %w (current is %d)", epoch, b.BaseEpoch, ErrBaseMissing, cur)
	}
	if free, ok := freeBytes(s.root); ok && free < b.TotalSize {
		return nil, fmt.Errorf("beginning checkpoint %d of %d bytes: %w (%d free)", epoch, b.TotalSize, ErrNoSpace, free)
	}
	dir := s.path(stagingDir, epochName(epoch))
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("beginning checkpoint %d: %w", epoch, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("beginning checkpoint %d: %w", epoch, err)
	}
	newChain := []uint64{epoch}
	if b.BaseEpoch != 0 {
		newChain = append(newChain, chain...)
	}
	st := &Staging{store: s, epoch: epoch, begin: b, dir: dir, chain: newChain,
		hasher: wire.NewContentHasher(), dirs: map[string]bool{dir: true}}
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
	Chain       []uint64  `json:"chain"`
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
		CommittedAt: m.CommittedAt, Chain: m.Chain}
	d, err := hex.DecodeString(m.Digest)
	if err != nil || len(d) != 32 || m.Epoch == 0 || len(m.Chain) == 0 || m.Chain[0] != m.Epoch {
		return nil, fmt.Errorf("manifest %s is malformed", s.path(manifestName))
	}
	copy(c.Digest[:], d)
	for _, e := range c.Chain {
		if _, err := os.Stat(s.path(checkpointsDir, epochName(e))); err != nil {
			return nil, fmt.Errorf("manifest names checkpoint %d: %w", e, err)
		}
	}
	return c, nil
}

// writeManifest replaces current.json atomically: write a temporary file,
// fsync it, rename it over the old one, fsync the directory. swapped reports
// whether the rename happened (the new manifest is in place).
func (s *Store) writeManifest(c *Checkpoint) (swapped bool, err error) {
	m := manifest{Epoch: c.Epoch, BaseEpoch: c.BaseEpoch, Dir: filepath.Join(checkpointsDir, epochName(c.Epoch)),
		Size: c.Size, Files: c.Files, Digest: hex.EncodeToString(c.Digest[:]), CommittedAt: c.CommittedAt, Chain: c.Chain}
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
	if err == nil {
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
	return true, syncDir(s.root)
}

// removeUnneeded deletes committed directories outside the current chain.
// Failures are logged, not returned: a leftover costs space, not safety.
func (s *Store) removeUnneeded() {
	entries, err := os.ReadDir(s.path(checkpointsDir))
	if err != nil {
		s.log.Error("listing committed checkpoints", "err", err)
		return
	}
	var keep []uint64
	if s.current != nil {
		keep = s.current.Chain
	}
	for _, e := range entries {
		epoch, err := strconv.ParseUint(e.Name(), 10, 64)
		if err == nil && slices.Contains(keep, epoch) {
			continue
		}
		if err := os.RemoveAll(s.path(checkpointsDir, e.Name())); err != nil {
			s.log.Error("removing old checkpoint", "dir", e.Name(), "err", err)
		}
	}
}

func syncDir(dir string) error {
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
