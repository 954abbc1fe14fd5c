// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"context"
	"errors"
	"testing"
	"time"
)

func in(n int) Record {
	return Record{Kind: KindInput, At: time.Unix(0, int64(n)), Packet: make([]byte, n)}
}

func next(t *testing.T, l *Log) Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b, err := l.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return b
}

// TestLogBatchesAndAcks: records appended while a batch is out go together
// into the next one; a seal starts a new epoch at index 1 and batches never
// span epochs; acks are cumulative and never go back.
func TestLogBatchesAndAcks(t *testing.T) {
	l := NewLog(5)
	if p, _ := l.Append(in(1)); p.Position != (Position{5, 1}) || p.Seq != 1 {
		t.Fatalf("first record at %s seq %d", p.Position, p.Seq)
	}
	b1 := next(t, l)
	if b1.Epoch != 5 || b1.First != 1 || b1.Count != 1 {
		t.Fatalf("first batch %+v", b1)
	}
	for i := 0; i < 3; i++ {
		if _, err := l.Append(in(10)); err != nil {
			t.Fatal(err)
		}
	}
	at, err := l.Seal(6)
	if err != nil || at.Position != (Position{5, 4}) || at.Seq != 4 {
		t.Fatalf("seal at %s seq %d, %v; want 5.4 seq 4", at.Position, at.Seq, err)
	}
	if p, _ := l.Append(in(2)); p.Position != (Position{6, 1}) || p.Seq != 5 {
		t.Fatalf("record after the seal at %s seq %d", p.Position, p.Seq)
	}
	b2, b3 := next(t, l), next(t, l)
	if b2.Epoch != 5 || b2.First != 2 || b2.Count != 3 || b3.Epoch != 6 || b3.First != 1 || b3.Count != 1 {
		t.Fatalf("batches %+v %+v", b2, b3)
	}
	recs, err := DecodeBatch(b2.Data)
	if err != nil || len(recs) != 3 || len(recs[0].Packet) != 10 {
		t.Fatalf("batch 2 decodes to %d records, %v", len(recs), err)
	}
	st := l.Stats()
	if st.Unacked != 5 || st.Batches != 3 || st.Records != 5 || st.OldestUnacked != time.Unix(0, 1) {
		t.Fatalf("stats before acks %+v", st)
	}
	if a := l.Ack(b2.Last()); a.Position != (Position{5, 4}) || a.Seq != 4 || a.Oldest.IsZero() {
		t.Fatalf("ack: %+v", a)
	}
	if a := l.Ack(Position{5, 2}); a.Position != (Position{5, 4}) || a.Seq != 4 || !a.Oldest.IsZero() {
		t.Fatalf("an older ack: %+v", a)
	}
	if st := l.Stats(); st.Unacked != 1 || st.OldestUnacked != time.Unix(0, 2) {
		t.Fatalf("stats after the ack %+v", st)
	}
	if a := l.Ack(b3.Last()); a.Position != (Position{6, 1}) || a.Seq != 5 {
		t.Fatalf("ack across the seal: %+v", a)
	}
	if _, err := l.Seal(6); err == nil {
		t.Error("seal at the same epoch accepted")
	}
}

func TestLogBatchLimits(t *testing.T) {
	l := NewLog(1)
	for i := 0; i < MaxBatch+10; i++ {
		if _, err := l.Append(in(0)); err != nil {
			t.Fatal(err)
		}
	}
	if b := next(t, l); b.Count != MaxBatch {
		t.Errorf("batch of %d records, want %d", b.Count, MaxBatch)
	}
	if b := next(t, l); b.Count != 10 || b.First != MaxBatch+1 {
		t.Errorf("rest: %d records from %d", b.Count, b.First)
	}
	for i := 0; i < 5; i++ {
		if _, err := l.Append(in(60 << 10)); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	for n < 5 {
		b := next(t, l)
		if len(b.Data) > MaxBatchBytes {
			t.Fatalf("batch of %d bytes", len(b.Data))
		}
		n += b.Count
	}
	if _, err := l.Append(in(MaxPacket + 1)); err == nil {
		t.Error("packet over the limit appended")
	}
	if _, err := l.Append(Record{Kind: 7}); err == nil {
		t.Error("record of an unknown kind appended")
	}
}

func TestLogNextWaits(t *testing.T) {
	l := NewLog(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty log: %v", err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		if _, err := l.Append(in(1)); err != nil {
			t.Error(err)
		}
	}()
	if b := next(t, l); b.Count != 1 {
		t.Fatalf("batch %+v", b)
	}
}

// TestLogRestart: a restart forgets what was not acknowledged, goes on with
// the sequence numbers and ignores late acknowledgements of before.
func TestLogRestart(t *testing.T) {
	l := NewLog(1)
	buf := []byte{7}
	if _, err := l.Append(Record{Kind: KindInput, Packet: buf}); err != nil {
		t.Fatal(err)
	}
	buf[0] = 8
	b := next(t, l)
	if recs, _ := DecodeBatch(b.Data); recs[0].Packet[0] != 7 {
		t.Fatal("the log kept the caller's buffer, not a copy")
	}
	if _, err := l.Append(in(1)); err != nil {
		t.Fatal(err)
	}
	l.Restart(4)
	if a, _ := l.Append(in(2)); a.Position != (Position{4, 1}) || a.Seq != 3 {
		t.Fatalf("after the restart: %s seq %d", a.Position, a.Seq)
	}
	if got := l.Ack(b.Last()).Position; got != (Position{4, 0}) {
		t.Fatalf("a late ack of the previous backup moved the log to %s", got)
	}
	if b := next(t, l); b.Epoch != 4 || b.First != 1 || b.Count != 1 {
		t.Fatalf("first batch after the restart %+v", b)
	}
	if st := l.Stats(); st.Unacked != 1 {
		t.Fatalf("stats %+v", st)
	}
}
