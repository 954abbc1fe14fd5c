// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/hybridlog"
	"github.com/iorrc/rrc/replication/wire"
)

// hybridPair runs a hybrid-mode pair whose backup keeps the log in a
// hybridlog.Store and whose primary records the acknowledgements.
type hybridPair struct {
	store *hybridlog.Store
	sendr *Sender
	mu    sync.Mutex
	acks  []hybridlog.Position
}

func startHybridPair(t *testing.T) *hybridPair {
	t.Helper()
	e := newEnv(t)
	h := &hybridPair{store: hybridlog.NewStore(1)}
	bopts := baseOptions(t, primaryName)
	bopts.Mode = wire.ModeHybrid
	bopts.OnLog = func(epoch, first uint64, data []byte) (uint64, uint64, error) {
		held, err := h.store.Append(hybridlog.Position{Epoch: epoch, Index: first}, data)
		return held.Epoch, held.Index, err
	}
	addr, _, _, _ := startBackup(t, bopts, e.backup, t.TempDir())
	popts := baseOptions(t, backupName)
	popts.Mode = wire.ModeHybrid
	popts.OnLogAck = func(epoch, index uint64) {
		h.mu.Lock()
		h.acks = append(h.acks, hybridlog.Position{Epoch: epoch, Index: index})
		h.mu.Unlock()
	}
	h.sendr = dial(t, addr, e.primary, popts)
	return h
}

func (h *hybridPair) waitAck(t *testing.T, want hybridlog.Position) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		n := len(h.acks)
		var last hybridlog.Position
		if n > 0 {
			last = h.acks[n-1]
		}
		h.mu.Unlock()
		if last == want {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no acknowledgement of %s (got %v)", want, h.acks)
}

// TestLogTransfer: batches of the log's primary side reach the backup's
// store in order, across a seal and alongside a checkpoint transfer, and
// are acknowledged up to their last record.
func TestLogTransfer(t *testing.T) {
	h := startHybridPair(t)
	l := hybridlog.NewLog(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	send := func() hybridlog.Batch {
		t.Helper()
		b, err := l.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.sendr.SendLog(ctx, b.Epoch, b.First, b.Count, b.Data); err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i := 0; i < 3; i++ {
		if _, err := l.Append(hybridlog.Record{Kind: hybridlog.KindInput, At: time.Now(), Packet: []byte(fmt.Sprint("packet ", i))}); err != nil {
			t.Fatal(err)
		}
	}
	b := send()
	h.waitAck(t, b.Last())
	if _, err := l.Seal(2); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTree(t, dir, 4, 300<<10)
	if _, err := h.sendr.Send(ctx, checkpoint(2, dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(hybridlog.Record{Kind: hybridlog.KindOutput, At: time.Now(), Digest: hybridlog.Digest([]byte("reply"))}); err != nil {
		t.Fatal(err)
	}
	b = send()
	h.waitAck(t, hybridlog.Position{Epoch: 2, Index: 1})
	if err := h.sendr.WaitAck(ctx, 2); err != nil {
		t.Fatalf("checkpoint beside the log: %v", err)
	}
	e, err := h.store.After(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(e) != 4 || string(e[2].Packet) != "packet 2" || e[3].Position != b.Last() || e[3].Kind != hybridlog.KindOutput {
		t.Fatalf("store holds %+v", e)
	}
}

// TestLogGapEndsConnection: a batch that does not continue the log is never
// acknowledged; the backup ends the connection.
func TestLogGapEndsConnection(t *testing.T) {
	h := startHybridPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := hybridlog.AppendBatch(nil, []hybridlog.Record{{Kind: hybridlog.KindInput, At: time.Now(), Packet: []byte("x")}})
	if err := h.sendr.SendLog(ctx, 1, 5, 1, data); err != nil { // index 5 where 1 is due
		t.Fatal(err)
	}
	select {
	case <-h.sendr.Done():
	case <-ctx.Done():
		t.Fatal("connection still up after a log with a hole")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.acks) != 0 {
		t.Fatalf("hole acknowledged: %v", h.acks)
	}
}

// TestLogRefusedInEpochMode: an epoch-mode backup refuses log frames.
func TestLogRefusedInEpochMode(t *testing.T) {
	e := newEnv(t)
	addr, _, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	acked := make(chan struct{}, 1)
	opts := baseOptions(t, backupName)
	opts.OnLogAck = func(uint64, uint64) { acked <- struct{}{} }
	s := dial(t, addr, e.primary, opts)
	data := hybridlog.AppendBatch(nil, []hybridlog.Record{{Kind: hybridlog.KindInput, At: time.Now()}})
	if err := s.SendLog(context.Background(), 1, 1, 1, data); err != nil {
		t.Fatal(err)
	}
	select {
	case <-acked:
		t.Fatal("an epoch-mode backup acknowledged a log batch")
	case <-time.After(300 * time.Millisecond):
	}
}
