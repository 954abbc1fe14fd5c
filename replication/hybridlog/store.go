// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"errors"
	"fmt"
	"sync"
)

// ErrGap is wrapped by Store.Append for a batch that does not continue the
// log exactly: a lost, repeated or reordered batch must end the session,
// never leave a hole that a replay would skip over.
var ErrGap = errors.New("hybridlog: batch does not continue the log")

// Store is the backup's side: the log from its last committed checkpoint
// on, in memory (like the checkpoints, it survives one host's failure, not
// both). It keeps the batches as they came, checked but encoded: a busy
// log is a few large byte slices for the garbage collector, not a record
// object per packet. Replay decodes them after restoring that checkpoint.
type Store struct {
	mu      sync.Mutex
	batches []storedBatch // in log order
	last    Position      // the last record held
	records int
	bytes   int
}

// storedBatch is a batch of records of one epoch, from index first on.
type storedBatch struct {
	first Position
	count int
	data  []byte // a copy: the frame's buffer is not kept
}

// NewStore starts an empty log after the checkpoint of epoch.
func NewStore(epoch uint64) *Store { return &Store{last: Position{epoch, 0}} }

// Append checks an encoded batch (CheckBatch) whose first record has
// position first, keeps a copy, and returns the position the log is held
// up to (what to acknowledge). The batch must continue the log: the next
// index of the same epoch, or index 1 of a later one.
func (s *Store) Append(first Position, batch []byte) (Position, error) {
	n, err := CheckBatch(batch)
	if err != nil {
		return s.Held(), err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		return s.last, fmt.Errorf("%w: empty batch at %s", ErrGap, first)
	}
	switch {
	case first.Epoch == s.last.Epoch && first.Index == s.last.Index+1:
	case first.Epoch > s.last.Epoch && first.Index == 1:
	default:
		return s.last, fmt.Errorf("%w: batch at %s after %s", ErrGap, first, s.last)
	}
	s.batches = append(s.batches, storedBatch{first: first, count: n, data: append([]byte(nil), batch...)})
	s.records += n
	s.bytes += len(batch)
	s.last = Position{first.Epoch, first.Index + uint64(n) - 1}
	return s.last, nil
}

// Held is the position the log is held up to.
func (s *Store) Held() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Committed drops the records before the checkpoint of epoch, which the
// backup has just committed: a replay starts from it.
func (s *Store) Committed(epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for i < len(s.batches) && s.batches[i].first.Epoch < epoch {
		s.records -= s.batches[i].count
		s.bytes -= len(s.batches[i].data)
		i++
	}
	s.batches = s.batches[i:]
	if s.last.Epoch < epoch {
		s.last = Position{epoch, 0}
	}
}

// After returns, in order, the records that follow the checkpoint of epoch:
// what a replay from that checkpoint feeds and checks. Their packets are
// the store's; the caller must not change them.
func (s *Store) After(epoch uint64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for _, b := range s.batches {
		if b.first.Epoch < epoch {
			continue
		}
		recs, err := DecodeBatch(b.data)
		if err != nil { // checked when stored: the memory changed under us
			return nil, fmt.Errorf("hybridlog: stored batch at %s: %w", b.first, err)
		}
		for i, r := range recs {
			out = append(out, Entry{Position{b.first.Epoch, b.first.Index + uint64(i)}, r})
		}
	}
	return out, nil
}

// Entry is a record with its position.
type Entry struct {
	Position
	Record
}

// StoreStats are the store's counters.
type StoreStats struct {
	Held    Position
	Records int
	Bytes   int // approximate memory held
}

// Stats returns the store's counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Held: s.last, Records: s.records, Bytes: s.bytes}
}
