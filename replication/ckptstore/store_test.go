// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iorrc/rrc/replication/wire"
)

// begin begins epoch on base for files, returning their paths in canonical
// order.
func begin[T string | []byte](t *testing.T, s *Store, epoch, base uint64, files map[string]T) ([]string, *Staging) {
	t.Helper()
	paths := make([]string, 0, len(files))
	var total uint64
	for p, c := range files {
		paths = append(paths, p)
		total += uint64(len(c))
	}
	slices.Sort(paths)
	st, err := s.Begin(epoch, wire.CheckpointBegin{TotalSize: total, FileCount: uint32(len(paths)), BaseEpoch: base})
	if err != nil {
		t.Fatal(err)
	}
	return paths, st
}

// put sends files (sorted by path) into a staging of epoch, returning the
// staging and the digest a primary would send.
func put(t *testing.T, s *Store, epoch, base uint64, files map[string]string) (*Staging, [32]byte) {
	t.Helper()
	paths, st := begin(t, s, epoch, base, files)
	h := wire.NewContentHasher()
	for _, p := range paths {
		data := []byte(files[p])
		h.BeginFile(p, 0o640, uint64(len(data)))
		h.Write(data)
		// two chunks per file to exercise continuation
		half := len(data) / 2
		for _, c := range []wire.CheckpointChunk{
			{Path: p, Mode: 0o640, FileSize: uint64(len(data)), Data: data[:half]},
			{Path: p, Mode: 0o640, FileSize: uint64(len(data)), Offset: uint64(half), Data: data[half:]},
		} {
			if err := st.Write(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st, h.Sum()
}

func commit(t *testing.T, s *Store, epoch, base uint64, files map[string]string) Checkpoint {
	t.Helper()
	st, d := put(t, s, epoch, base, files)
	c, err := st.Commit(d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCommitAndReopen(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Current(); ok {
		t.Fatal("empty store has a current checkpoint")
	}
	commit(t, s, 1, 0, map[string]string{"a.img": "aaaa"})
	c := commit(t, s, 2, 0, map[string]string{"pages-1.img": "hello world", "fs/etc/x": "x", "empty": ""})
	if b, _ := os.ReadFile(filepath.Join(c.Dir, "fs/etc/x")); string(b) != "x" {
		t.Fatalf("content %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(c.Dir, "pages-1.img")); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(root, checkpointsDir, epochName(1))); err != nil {
		t.Fatalf("epoch 1, the spare, is gone: %v", err)
	}
	// a crash mid-transfer leaves a staging directory behind (the spare,
	// half rewritten)
	put(t, s, 3, 0, map[string]string{"z": "zz"})
	s2, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cur, ok := s2.Current(); !ok || cur.Epoch != 2 || cur.Digest != c.Digest || cur.Files != 3 {
		t.Fatalf("after reopen: %+v", cur)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, checkpointsDir)); len(ents) != 1 {
		t.Fatalf("committed directories after reopen: %v, want the current one", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, stagingDir)); len(ents) != 0 {
		t.Fatalf("stale staging left: %v", ents)
	}
}

func TestRejects(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, 5, 0, map[string]string{"a": "good"})

	if _, err := s.Begin(5, wire.CheckpointBegin{}); !errors.Is(err, ErrEpochOrder) {
		t.Errorf("same epoch: %v", err)
	}
	if _, err := s.Begin(9, wire.CheckpointBegin{BaseEpoch: 4}); !errors.Is(err, ErrBaseMissing) {
		t.Errorf("missing base: %v", err)
	}

	st, d := put(t, s, 6, 0, map[string]string{"a": "evil"})
	d[0] ^= 1
	if _, err := st.Commit(d); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad digest: %v", err)
	}

	st, err = s.Begin(7, wire.CheckpointBegin{TotalSize: 10, FileCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(8, wire.CheckpointBegin{}); !errors.Is(err, ErrBusy) {
		t.Errorf("second staging: %v", err)
	}
	st.Write(wire.CheckpointChunk{Path: "a", FileSize: 10, Data: []byte("12345")})
	if _, err := st.Commit(wire.NewContentHasher().Sum()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}

	for name, chunks := range map[string][]wire.CheckpointChunk{
		"order":     {{Path: "b", FileSize: 1, Data: []byte("b")}, {Path: "a", FileSize: 1, Data: []byte("a")}},
		"gap":       {{Path: "a", FileSize: 4, Data: []byte("a")}, {Path: "a", FileSize: 4, Offset: 2, Data: []byte("a")}},
		"late":      {{Path: "a", FileSize: 4, Offset: 1, Data: []byte("a")}},
		"too many":  {{Path: "a", FileSize: 1, Data: []byte("a")}, {Path: "b", FileSize: 1, Data: []byte("b")}, {Path: "c", FileSize: 1, Data: []byte("c")}},
		"too big":   {{Path: "a", FileSize: 40, Data: make([]byte, 40)}},
		"short":     {{Path: "a", FileSize: 4, Data: []byte("a")}, {Path: "b", FileSize: 1, Data: []byte("b")}},
		"resize":    {{Path: "a", FileSize: 4, Data: []byte("a")}, {Path: "a", FileSize: 5, Offset: 1, Data: []byte("a")}},
		"traversal": {{Path: "../x", FileSize: 1, Data: []byte("a")}},
	} {
		st, err := s.Begin(10, wire.CheckpointBegin{TotalSize: 20, FileCount: 2})
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		for _, c := range chunks {
			if werr = st.Write(c); werr != nil {
				break
			}
		}
		if !errors.Is(werr, ErrCorrupt) {
			t.Errorf("%s: %v", name, werr)
		}
		st.Abort(name)
	}
	if cur, _ := s.Current(); cur.Epoch != 5 {
		t.Fatalf("current is %d after rejections", cur.Epoch)
	}
	if b, _ := os.ReadFile(filepath.Join(s.path(checkpointsDir, epochName(5)), "a")); string(b) != "good" {
		t.Fatalf("current content %q", b)
	}
	if ents, _ := os.ReadDir(s.path(stagingDir)); len(ents) != 0 {
		t.Fatalf("staging left: %v", ents)
	}
}

// blocks returns n blocks of distinct content (a little over n*BlockSize if
// tail > 0).
func blocks(n, tail int, seed byte) []byte {
	b := make([]byte, n*wire.BlockSize+tail)
	for i := range b {
		b[i] = seed + byte(i/wire.BlockSize) + byte(i%251)
	}
	return b
}

// sendDelta stages epoch as a delta on base: for each file, ops are either a
// copy from the base or literal data, in file order.
type deltaOp struct {
	copyFrom   string // base path; "" for literal data
	baseOffset uint64
	data       []byte // literal, or the bytes a copy is expected to give (for the digest)
}

func sendDelta(t *testing.T, s *Store, epoch, base uint64, path string, ops []deltaOp) (*Staging, [32]byte, error) {
	t.Helper()
	var size uint64
	for _, op := range ops {
		size += uint64(len(op.data))
	}
	st, err := s.Begin(epoch, wire.CheckpointBegin{TotalSize: size, FileCount: 1, BaseEpoch: base})
	if err != nil {
		return nil, [32]byte{}, err
	}
	h := wire.NewContentHasher()
	h.BeginFile(path, 0o600, size)
	var off uint64
	for _, op := range ops {
		h.Write(op.data)
		if op.copyFrom != "" {
			err = st.Copy(wire.CheckpointCopy{Path: path, Mode: 0o600, FileSize: size, Offset: off, Length: uint64(len(op.data)),
				BasePath: op.copyFrom, BaseOffset: op.baseOffset})
		} else {
			err = st.Write(wire.CheckpointChunk{Path: path, Mode: 0o600, FileSize: size, Offset: off, Data: op.data})
		}
		if err != nil {
			return st, [32]byte{}, err
		}
		off += uint64(len(op.data))
	}
	return st, h.Sum(), nil
}

// A delta is complete by itself once committed: its copied blocks are in its
// own files, the base's directory is gone, and Verify passes.
func TestDeltaCheckpoint(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := blocks(4, 100, 1)
	commit(t, s, 1, 0, map[string]string{"pages-1.img": string(old)})
	changed := blocks(1, 0, 9)
	// new file: base block 2, a changed block, base blocks 0-1, the base's short tail
	want := append(append(append(append([]byte{}, old[2*4096:3*4096]...), changed...), old[:2*4096]...), old[4*4096:]...)
	st, d, err := sendDelta(t, s, 2, 1, "pages-1.img", []deltaOp{
		{copyFrom: "pages-1.img", baseOffset: 2 * 4096, data: old[2*4096 : 3*4096]},
		{data: changed},
		{copyFrom: "pages-1.img", baseOffset: 0, data: old[:2*4096]},
		{copyFrom: "pages-1.img", baseOffset: 4 * 4096, data: old[4*4096:]},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Commit(d)
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseEpoch != 1 || c.Copied != uint64(len(want)-4096) || c.Size != uint64(len(want)) {
		t.Fatalf("committed %+v", c)
	}
	if got, _ := os.ReadFile(filepath.Join(c.Dir, "pages-1.img")); !bytes.Equal(got, want) {
		t.Fatal("delta's file content differs")
	}
	if ents, _ := os.ReadDir(s.path(checkpointsDir)); len(ents) != 2 {
		t.Fatalf("committed directories %v, want the delta and the spare", ents)
	}
	if err := c.Verify(); err != nil {
		t.Fatal(err)
	}
	// A delta on the delta.
	st, d, err = sendDelta(t, s, 3, 2, "pages-1.img", []deltaOp{{copyFrom: "pages-1.img", baseOffset: 4096, data: want[4096 : 2*4096]}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(d); err != nil {
		t.Fatal(err)
	}
	// Reopened: the block digests are gone, deltas are refused until a full one.
	s2, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := sendDelta(t, s2, 4, 3, "pages-1.img", []deltaOp{{copyFrom: "pages-1.img", data: want[:4096]}}); !errors.Is(err, ErrBaseMissing) {
		t.Fatalf("delta after reopen: %v, want ErrBaseMissing", err)
	}
	commit(t, s2, 4, 0, map[string]string{"a": "full"})
	if _, _, err := sendDelta(t, s2, 5, 3, "a", []deltaOp{{copyFrom: "a", data: []byte("full")}}); !errors.Is(err, ErrBaseMissing) {
		t.Fatalf("delta on an old base: %v, want ErrBaseMissing", err)
	}
}

// A copy the base cannot give is refused and the current checkpoint stays.
func TestDeltaRejects(t *testing.T) {
	old := blocks(2, 10, 1)
	tests := []struct {
		name string
		base uint64
		ops  []deltaOp
	}{
		{"copy in a full checkpoint", 0, []deltaOp{{copyFrom: "p", data: old[:4096]}}},
		{"no such base file", 1, []deltaOp{{copyFrom: "q", data: old[:4096]}}},
		{"beyond the base file", 1, []deltaOp{{copyFrom: "p", baseOffset: 2 * 4096, data: old[:4096]}}},
		{"short block not the base's last", 1, []deltaOp{{copyFrom: "p", baseOffset: 0, data: old[:10]}}},
		{"unaligned offset in the new file", 1, []deltaOp{{data: old[:10]}, {copyFrom: "p", data: old[:4096]}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			commit(t, s, 1, 0, map[string]string{"p": string(old)})
			st, _, err := sendDelta(t, s, 2, tc.base, "p", tc.ops)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			st.Abort(err.Error())
			if c, _ := s.Current(); c.Epoch != 1 {
				t.Fatalf("current %d", c.Epoch)
			}
		})
	}
}

// The base's content is what the copy takes: a base damaged on disk gives
// a delta whose digest (from the base's known block digests) still matches,
// but whose files do not: Verify, before any restore, refuses it.
func TestDeltaFromDamagedBaseFailsVerify(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := blocks(2, 0, 3)
	c1 := commit(t, s, 1, 0, map[string]string{"p": string(old)})
	if err := os.WriteFile(filepath.Join(c1.Dir, "p"), blocks(2, 0, 4), 0o600); err != nil {
		t.Fatal(err)
	}
	st, d, err := sendDelta(t, s, 2, 1, "p", []deltaOp{{copyFrom: "p", data: old}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Commit(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify: %v, want ErrCorrupt", err)
	}
}

// Checkpoints rewritten in place into the spare, over many epochs of
// files that change, grow, shrink, appear and disappear: every committed
// checkpoint has exactly the files sent, verifies, and the store holds the
// current checkpoint and one spare.
func TestDeltaInPlaceEpochs(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string][]byte{"pages-1.img": blocks(6, 0, 1), "core-1.img": []byte("core"), "fs/rootfs.tar": blocks(1, 300, 2)}
	commit(t, s, 1, 0, stringsOf(files))
	for epoch := uint64(2); epoch <= 40; epoch++ {
		next := map[string][]byte{}
		for p, b := range files {
			b = bytes.Clone(b)
			switch rng.IntN(6) {
			case 0: // a block rewritten
				if len(b) > 0 {
					i := rng.IntN(len(b))
					b[i] ^= 0x5a
				}
			case 1: // grown by a block and a bit
				b = append(b, blocks(1, rng.IntN(100), byte(epoch))...)
			case 2: // shrunk
				b = b[:rng.IntN(len(b)+1)]
			case 3: // gone
				continue
			}
			next[p] = b
		}
		if rng.IntN(3) == 0 {
			next[fmt.Sprintf("pages-%d.img", epoch)] = blocks(rng.IntN(3), rng.IntN(50), byte(epoch))
		}
		st, d := putDelta(t, s, epoch, epoch-1, files, next)
		c, err := st.Commit(d)
		if err != nil {
			t.Fatalf("epoch %d: %v", epoch, err)
		}
		for p, want := range next {
			if got, err := os.ReadFile(filepath.Join(c.Dir, p)); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("epoch %d: %s differs (%v)", epoch, p, err)
			}
		}
		if err := c.Verify(); err != nil { // also: no file beyond those sent
			t.Fatalf("epoch %d: %v", epoch, err)
		}
		if ents, _ := os.ReadDir(s.path(checkpointsDir)); len(ents) != 2 {
			t.Fatalf("epoch %d: committed directories %v", epoch, ents)
		}
		files = next
	}
}

func stringsOf(files map[string][]byte) map[string]string {
	m := map[string]string{}
	for p, b := range files {
		m[p] = string(b)
	}
	return m
}

// putDelta stages next as a delta on base: each block that is at the same
// place in the base's file of that path is a copy, the rest is data.
func putDelta(t *testing.T, s *Store, epoch, base uint64, old, next map[string][]byte) (*Staging, [32]byte) {
	t.Helper()
	paths, st := begin(t, s, epoch, base, next)
	h := wire.NewContentHasher()
	for _, p := range paths {
		b, o := next[p], old[p]
		h.BeginFile(p, 0o640, uint64(len(b)))
		h.Write(b)
		if len(b) == 0 {
			if err := st.Write(wire.CheckpointChunk{Path: p, Mode: 0o640}); err != nil {
				t.Fatal(err)
			}
		}
		for off := 0; off < len(b); off += wire.BlockSize {
			end := min(off+wire.BlockSize, len(b))
			var err error
			if end <= len(o) && bytes.Equal(o[off:end], b[off:end]) && (end-off == wire.BlockSize || end == len(o)) {
				err = st.Copy(wire.CheckpointCopy{Path: p, Mode: 0o640, FileSize: uint64(len(b)), Offset: uint64(off),
					Length: uint64(end - off), BasePath: p, BaseOffset: uint64(off)})
			} else {
				err = st.Write(wire.CheckpointChunk{Path: p, Mode: 0o640, FileSize: uint64(len(b)), Offset: uint64(off), Data: b[off:end]})
			}
			if err != nil {
				t.Fatalf("epoch %d, %s at %d: %v", epoch, p, off, err)
			}
		}
	}
	return st, h.Sum()
}

// A block of the current checkpoint damaged on disk is found by Scrub
// within a few calls; the store then refuses deltas until a full
// checkpoint, which verifies again.
func TestScrubFindsDamageAndForcesFull(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pages := blocks(40, 0, 5)
	c := commit(t, s, 1, 0, map[string]string{"a.img": "small", "pages-1.img": string(pages)})
	for range 5 { // intact: nothing found, around and around
		if err := s.Scrub(8 * wire.BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	damaged := bytes.Clone(pages)
	damaged[33*wire.BlockSize+7] ^= 1
	if err := os.WriteFile(filepath.Join(c.Dir, "pages-1.img"), damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	var found error
	for i := 0; i < 10 && found == nil; i++ {
		found = s.Scrub(8 * wire.BlockSize)
	}
	if !errors.Is(found, ErrCorrupt) || !strings.Contains(found.Error(), "block 33 of pages-1.img") {
		t.Fatalf("scrub: %v, want block 33 of pages-1.img corrupt", found)
	}
	if _, _, err := sendDelta(t, s, 2, 1, "pages-1.img", []deltaOp{{copyFrom: "pages-1.img", data: pages}}); !errors.Is(err, ErrBaseMissing) {
		t.Fatalf("delta on a damaged base: %v, want ErrBaseMissing", err)
	}
	c = commit(t, s, 3, 0, map[string]string{"pages-1.img": string(pages)})
	if err := c.Verify(); err != nil {
		t.Fatal(err)
	}
}
