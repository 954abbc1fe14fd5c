// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Position is a place in the log: the checkpoint epoch the records follow
// and a record's index after it (from 1; index 0 is the checkpoint itself).
type Position struct {
	Epoch, Index uint64
}

// Less orders positions: by epoch, then by index.
func (p Position) Less(q Position) bool {
	return p.Epoch < q.Epoch || (p.Epoch == q.Epoch && p.Index < q.Index)
}

func (p Position) String() string { return fmt.Sprintf("%d.%d", p.Epoch, p.Index) }

// Batch is consecutive records of one epoch, encoded (AppendBatch), ready to
// go to the backup as one frame.
type Batch struct {
	Epoch uint64
	First uint64 // index of the first record
	Count int
	Data  []byte
}

// Last is the position of the batch's last record.
func (b Batch) Last() Position { return Position{b.Epoch, b.First + uint64(b.Count) - 1} }

// MaxBatchBytes bounds a batch's encoding (one frame of the peer protocol).
const MaxBatchBytes = 256 << 10

// segment is appended records of one epoch not handed out yet.
type segment struct {
	epoch, first uint64
	recs         []Record
}

// inFlight is a batch handed out and not acknowledged yet.
type inFlight struct {
	last    Position
	lastSeq uint64
	count   int
	at      time.Time // its first record's time
}

// Appended is where a record went: its position, and its sequence number
// over the log's whole life (1, 2, …), which, unlike the index, does not
// restart at a seal: what an output gate tags a packet with.
type Appended struct {
	Position
	Seq uint64
}

// Log is the primary's side: records are appended in the order the
// container saw them, under one lock, so the index order is the total
// order. Next hands out everything appended since the last call as one
// batch: records that arrive while a batch is being sent go together into
// the next, so a busy connection costs a few frames, not one per packet.
// Ack records what the backup holds.
type Log struct {
	mu       sync.Mutex
	start    uint64 // the epoch of the last NewLog or Restart
	epoch    uint64
	next     uint64 // index of the next record
	queue    []segment
	queued   int // records in queue
	inFlight []inFlight
	acked    Position
	ackedSeq uint64
	appended Position
	ready    chan struct{}
	records  uint64
	bytes    uint64
	batches  uint64
}

// NewLog starts a log after the checkpoint of epoch.
func NewLog(epoch uint64) *Log {
	p := Position{epoch, 0}
	return &Log{start: epoch, epoch: epoch, next: 1, acked: p, appended: p, ready: make(chan struct{}, 1)}
}

// Restart begins the log again after the checkpoint of epoch (above every
// epoch so far), for a new backup: what was not handed out or not
// acknowledged is forgotten (the new backup starts from a checkpoint of its
// own), sequence numbers go on, and acknowledgements of earlier epochs are
// ignored from now on.
func (l *Log) Restart(epoch uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := Position{epoch, 0}
	l.start, l.epoch, l.next = epoch, epoch, 1
	l.queue, l.queued, l.inFlight = nil, 0, nil
	l.acked, l.appended = p, p
}

// Append adds r and says where it went; it keeps a copy of r's packet. A
// packet over MaxPacket, or a record of no known kind, is refused: it could
// not be logged.
func (l *Log) Append(r Record) (Appended, error) { return l.append(r, true) }

// AppendQuiet is Append without waking Next: the caller hands the record
// out itself (Take) or, if it cannot, calls Wake.
func (l *Log) AppendQuiet(r Record) (Appended, error) { return l.append(r, false) }

// Wake makes a waiting Next look for records.
func (l *Log) Wake() {
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

func (l *Log) append(r Record, wake bool) (Appended, error) {
	switch {
	case r.Kind == KindInput && len(r.Packet) > MaxPacket:
		return Appended{}, fmt.Errorf("hybridlog: input packet of %d bytes exceeds %d", len(r.Packet), MaxPacket)
	case r.Kind != KindInput && r.Kind != KindOutput:
		return Appended{}, fmt.Errorf("hybridlog: record of %s", r.Kind)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	pos := Position{l.epoch, l.next}
	l.next++
	if r.Packet != nil {
		r.Packet = append([]byte(nil), r.Packet...)
	}
	if n := len(l.queue); n == 0 || l.queue[n-1].epoch != l.epoch {
		l.queue = append(l.queue, segment{epoch: l.epoch, first: pos.Index})
	}
	s := &l.queue[len(l.queue)-1]
	s.recs = append(s.recs, r)
	l.queued++
	l.records++
	l.appended = pos
	if wake {
		l.Wake()
	}
	return Appended{pos, l.records}, nil
}

// Seal ends the current epoch at a checkpoint: records appended from now on
// follow the checkpoint of epoch (after the current one), from index 1. It
// returns the checkpoint's place: the last record before it, and that
// record's sequence number.
func (l *Log) Seal(epoch uint64) (Appended, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if epoch <= l.epoch {
		return Appended{}, fmt.Errorf("hybridlog: seal at epoch %d, not after %d", epoch, l.epoch)
	}
	at := Appended{Position{l.epoch, l.next - 1}, l.records}
	l.epoch, l.next = epoch, 1
	return at, nil
}

// Next waits until records are there and hands them out as one batch of
// one epoch (bounded by MaxBatch records and MaxBatchBytes).
func (l *Log) Next(ctx context.Context) (Batch, error) {
	for {
		if b, ok := l.Take(); ok {
			return b, nil
		}
		if err := l.Wait(ctx); err != nil {
			return Batch{}, err
		}
	}
}

// Wait waits until Append or Wake says records may be there.
func (l *Log) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-l.ready:
		return nil
	}
}

// Take is Next without the wait: ok is false when no record is there.
func (l *Log) Take() (b Batch, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return Batch{}, false
	}
	return l.takeLocked(), true
}

func (l *Log) takeLocked() Batch {
	s := &l.queue[0]
	b := Batch{Epoch: s.epoch, First: s.first}
	size := 2
	n := 0
	for n < len(s.recs) && n < MaxBatch {
		size += encodedSize(s.recs[n])
		if n > 0 && size > MaxBatchBytes {
			break
		}
		n++
	}
	b.Count = n
	b.Data = AppendBatch(make([]byte, 0, size), s.recs[:n])
	l.inFlight = append(l.inFlight, inFlight{last: b.Last(), lastSeq: l.records - uint64(l.queued) + uint64(n), count: n, at: s.recs[0].At})
	if n == len(s.recs) {
		l.queue = l.queue[1:]
	} else {
		s.recs, s.first = s.recs[n:], s.first+uint64(n)
	}
	l.queued -= n
	l.bytes += uint64(len(b.Data))
	l.batches++
	if len(l.queue) > 0 { // more to hand out: the next Next need not wait
		l.Wake()
	}
	return b
}

func encodedSize(r Record) int {
	if r.Kind == KindInput {
		return recordHeader + 4 + len(r.Packet)
	}
	return recordHeader + digestSize
}

// Acked is what an acknowledgement did.
type Acked struct {
	Position        // acknowledged, which never goes back
	Seq      uint64 // sequence number of the last record of the batches it covers entirely
	// Oldest is when the first record of the oldest batch it completed was
	// appended (zero if it completed none): the log's round trip.
	Oldest time.Time
}

// Ack records that the backup holds the log up to pos (cumulative).
func (l *Log) Ack(pos Position) Acked {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pos.Epoch >= l.start && l.acked.Less(pos) {
		l.acked = pos
	}
	a := Acked{}
	i := 0
	for i < len(l.inFlight) && !l.acked.Less(l.inFlight[i].last) {
		if i == 0 {
			a.Oldest = l.inFlight[0].at
		}
		l.ackedSeq = l.inFlight[i].lastSeq
		i++
	}
	l.inFlight = l.inFlight[i:]
	a.Position, a.Seq = l.acked, l.ackedSeq
	return a
}

// Stats are the log's counters.
type Stats struct {
	Records, Bytes, Batches uint64   // appended records; bytes and batches handed out
	Appended, Acked         Position // the last record; what the backup holds
	Unacked                 int      // records not acknowledged yet
	OldestUnacked           time.Time
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Stats{Records: l.records, Bytes: l.bytes, Batches: l.batches, Appended: l.appended, Acked: l.acked, Unacked: l.queued}
	for _, f := range l.inFlight {
		st.Unacked += f.count
	}
	switch {
	case len(l.inFlight) > 0:
		st.OldestUnacked = l.inFlight[0].at
	case len(l.queue) > 0:
		st.OldestUnacked = l.queue[0].recs[0].At
	}
	return st
}
