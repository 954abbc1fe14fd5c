package ckptstore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/iorrc/rrc/replication/wire"
)

// put sends files (sorted by path) into a staging of epoch, returning the
// staging and the digest a primary would send.
func put(t *testing.T, s *Store, epoch, base uint64, files map[string]string) (*Staging, [32]byte) {
	t.Helper()
	paths := make([]string, 0, len(files))
	var total uint64
	for p, c := range files {
		paths = append(paths, p)
		total += uint64(len(c))
	}
	slices.Sort(paths)
	st, err := s.Begin(epoch, wire.CheckpointBegin{TotalSize: total, FileCount: uint32(len(files)), BaseEpoch: base})
	if err != nil {
		t.Fatal(err)
	}
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
	s, err := Open(root, nil)
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
	if _, err := os.Stat(filepath.Join(root, checkpointsDir, epochName(1))); !os.IsNotExist(err) {
		t.Fatalf("epoch 1 still there: %v", err)
	}
	// a crash mid-transfer leaves a staging directory behind
	put(t, s, 3, 0, map[string]string{"z": "zz"})
	s2, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cur, ok := s2.Current(); !ok || cur.Epoch != 2 || cur.Digest != c.Digest || cur.Files != 3 {
		t.Fatalf("after reopen: %+v", cur)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, stagingDir)); len(ents) != 0 {
		t.Fatalf("stale staging left: %v", ents)
	}
}

func TestRejects(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
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

func TestIncrementalKeepsChain(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, 1, 0, map[string]string{"a": "full"})
	commit(t, s, 2, 1, map[string]string{"a": "delta"})
	c := commit(t, s, 3, 2, map[string]string{"a": "delta2"})
	if !slices.Equal(c.Chain, []uint64{3, 2, 1}) {
		t.Fatalf("chain %v", c.Chain)
	}
	c = commit(t, s, 4, 0, map[string]string{"a": "full"})
	ents, _ := os.ReadDir(s.path(checkpointsDir))
	if len(ents) != 1 || !slices.Equal(c.Chain, []uint64{4}) {
		t.Fatalf("after a full checkpoint: %v, chain %v", ents, c.Chain)
	}
}
