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
// both). Replay reads it after restoring that checkpoint.
type Store struct {
	mu     sync.Mutex
	epochs []epochLog // increasing epochs
	last   Position   // the last record held
	bytes  int
}

// epochLog is the records that follow the checkpoint of one epoch. Their
// packets are copies: a batch's buffer is not kept.
type epochLog struct {
	epoch uint64
	recs  []Record
}

// NewStore starts an empty log after the checkpoint of epoch.
func NewStore(epoch uint64) *Store { return &Store{last: Position{epoch, 0}} }

// Append adds a decoded batch whose first record has position first, and
// returns the position the log is held up to (what to acknowledge). The
// batch must continue the log: the next index of the same epoch, or index 1
// of a later one.
func (s *Store) Append(first Position, recs []Record) (Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(recs) == 0 {
		return s.last, fmt.Errorf("%w: empty batch at %s", ErrGap, first)
	}
	switch {
	case first.Epoch == s.last.Epoch && first.Index == s.last.Index+1:
	case first.Epoch > s.last.Epoch && first.Index == 1:
	default:
		return s.last, fmt.Errorf("%w: batch at %s after %s", ErrGap, first, s.last)
	}
	if n := len(s.epochs); n == 0 || s.epochs[n-1].epoch != first.Epoch {
		s.epochs = append(s.epochs, epochLog{epoch: first.Epoch})
	}
	e := &s.epochs[len(s.epochs)-1]
	for _, r := range recs {
		if r.Packet != nil {
			r.Packet = append([]byte(nil), r.Packet...)
			s.bytes += len(r.Packet)
		}
		s.bytes += recordHeader + digestSize
		e.recs = append(e.recs, r)
	}
	s.last = Position{first.Epoch, first.Index + uint64(len(recs)) - 1}
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
	for i < len(s.epochs) && s.epochs[i].epoch < epoch {
		for _, r := range s.epochs[i].recs {
			s.bytes -= recordHeader + digestSize + len(r.Packet)
		}
		i++
	}
	s.epochs = s.epochs[i:]
	if s.last.Epoch < epoch {
		s.last = Position{epoch, 0}
	}
}

// After returns, in order, the records that follow the checkpoint of epoch:
// what a replay from that checkpoint feeds and checks. The slices are the
// store's; the caller must not change them.
func (s *Store) After(epoch uint64) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for _, e := range s.epochs {
		if e.epoch < epoch {
			continue
		}
		for i, r := range e.recs {
			out = append(out, Entry{Position{e.epoch, uint64(i) + 1}, r})
		}
	}
	return out
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
	st := StoreStats{Held: s.last, Bytes: s.bytes}
	for _, e := range s.epochs {
		st.Records += len(e.recs)
	}
	return st
}
