// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/wire"
)

// pagesFile is n distinct random blocks.
func pagesFile(rng *rand.ChaCha8, n int) []byte {
	b := make([]byte, n*wire.BlockSize)
	rng.Read(b)
	return b
}

func sendStats(t *testing.T, s *Sender, c Checkpoint) SendStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := s.Send(ctx, c)
	if err != nil {
		t.Fatalf("Send %d: %v", c.Epoch, err)
	}
	if err := s.WaitAck(ctx, c.Epoch); err != nil {
		t.Fatalf("ack of %d: %v", c.Epoch, err)
	}
	return st
}

// Each checkpoint after the first goes as a delta: the backup ends up with
// exactly the primary's files, while only the changed blocks cross the
// wire, also when pages moved in the file (a mapping grew in the middle),
// when a file is new, or when one shrank.
func TestDeltaTransfer(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	s := dial(t, addr, e.primary, baseOptions(t, backupName))
	rng := rand.NewChaCha8([32]byte{7})
	dir := t.TempDir()
	// A new file each time, as CRIU writes: Send's files must not change
	// once sent (the base stays mapped).
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	pages := pagesFile(rng, 64)
	write("pages-1.img", pages)
	write("core-1.img", []byte("core: short, under one block"))
	write("empty.img", nil)
	st := sendStats(t, s, checkpoint(1, dir))
	if st.BaseEpoch != 0 || st.Copied != 0 || st.Sent != st.Size {
		t.Fatalf("first checkpoint %+v, want full", st)
	}
	check := func(epoch uint64) {
		t.Helper()
		cur, _ := store.Current()
		if cur.Epoch != epoch {
			t.Fatalf("current %d, want %d", cur.Epoch, epoch)
		}
		sameTree(t, dir, filepath.Join(cur.Dir, "criu"))
		if err := cur.Verify(); err != nil {
			t.Fatal(err)
		}
	}
	check(1)

	// Two blocks written, nothing else changed.
	rng.Read(pages[3*wire.BlockSize : 4*wire.BlockSize])
	rng.Read(pages[40*wire.BlockSize+100 : 40*wire.BlockSize+200])
	write("pages-1.img", pages)
	st = sendStats(t, s, checkpoint(2, dir))
	if st.BaseEpoch != 1 || st.Sent != 2*wire.BlockSize || st.Copied != st.Size-st.Sent {
		t.Fatalf("two blocks changed: %+v", st)
	}
	check(2)

	// A block inserted in the middle shifts the rest; a new file; the
	// short file changed; a block removed at the end.
	ins := append(append(append([]byte{}, pages[:10*wire.BlockSize]...), pagesFile(rng, 1)...), pages[10*wire.BlockSize:63*wire.BlockSize]...)
	write("pages-1.img", ins)
	write("pages-2.img", append(pagesFile(rng, 1), pages[:4*wire.BlockSize]...))
	write("core-1.img", []byte("core: changed"))
	st = sendStats(t, s, checkpoint(3, dir))
	// The two new blocks, and before the moved pages are looked for, up
	// to shiftSuspect-1 of them.
	if want := uint64((2+shiftSuspect-1)*wire.BlockSize + len("core: changed")); st.Sent > want || st.Sent < want-(shiftSuspect-1)*wire.BlockSize {
		t.Fatalf("shifted pages: sent %d bytes, want at most %d (%+v)", st.Sent, want, st)
	}
	check(3)

	// Nothing changed at all: nothing but the empty file's chunk is sent.
	st = sendStats(t, s, checkpoint(4, dir))
	if st.Sent != 0 || st.Copied != st.Size {
		t.Fatalf("unchanged checkpoint: %+v", st)
	}
	check(4)
}

// A refused checkpoint makes the next one full: the backup's current
// checkpoint is then not the base the primary would use.
func TestDeltaAfterNackIsFull(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	opts := baseOptions(t, backupName)
	corrupt := false
	opts.hooks = &testHooks{chunk: func(c *wire.CheckpointChunk) {
		if corrupt && len(c.Data) > 0 {
			c.Data[0] ^= 1
		}
	}}
	s := dial(t, addr, e.primary, opts)
	rng := rand.NewChaCha8([32]byte{8})
	dir := t.TempDir()
	pages := pagesFile(rng, 16)
	if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	sendStats(t, s, checkpoint(1, dir))
	rng.Read(pages[:wire.BlockSize])
	os.Remove(filepath.Join(dir, "pages-1.img")) // a new file: the sent one stays mapped
	if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt = true
	ctx := context.Background()
	if _, err := s.Send(ctx, checkpoint(2, dir)); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAck(ctx, 2); err == nil {
		t.Fatal("a corrupted delta was acknowledged")
	}
	corrupt = false
	st := sendStats(t, s, checkpoint(3, dir))
	if st.BaseEpoch != 0 || st.Sent != st.Size {
		t.Fatalf("after a nack: %+v, want a full checkpoint", st)
	}
	if cur, _ := store.Current(); cur.Epoch != 3 {
		t.Fatalf("current %d", cur.Epoch)
	}
	if st := sendStats(t, s, checkpoint(4, dir)); st.BaseEpoch != 3 || st.Sent != 0 {
		t.Fatalf("after the full one: %+v, want a delta on 3", st)
	}
}
