// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"errors"
	"testing"
)

func TestStoreContinuity(t *testing.T) {
	tests := []struct {
		name  string
		first Position
		ok    bool
	}{
		{"next index", Position{3, 3}, true},
		{"later epoch from 1", Position{4, 1}, true},
		{"gap", Position{3, 4}, false},
		{"repeat", Position{3, 2}, false},
		{"later epoch not from 1", Position{4, 2}, false},
		{"earlier epoch", Position{2, 1}, false},
	}
	for _, tc := range tests {
		s := NewStore(3)
		if _, err := s.Append(Position{3, 1}, AppendBatch(nil, []Record{in(1), in(2)})); err != nil {
			t.Fatal(err)
		}
		held, err := s.Append(tc.first, AppendBatch(nil, []Record{in(3)}))
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrGap)) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.ok && held != tc.first {
			t.Errorf("%s: held %s, want %s", tc.name, held, tc.first)
		}
		if !tc.ok && held != (Position{3, 2}) {
			t.Errorf("%s: refused batch moved the log to %s", tc.name, held)
		}
	}
}

// TestStoreCommitted: a committed checkpoint drops the records before it,
// After returns what a replay from a checkpoint feeds, in order, and the
// store keeps a copy of each batch, not the frame's buffer.
func TestStoreCommitted(t *testing.T) {
	s := NewStore(1)
	mustAppend := func(first Position, recs ...Record) []byte {
		t.Helper()
		b := AppendBatch(nil, recs)
		if _, err := s.Append(first, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	after := func(epoch uint64) []Entry {
		t.Helper()
		e, err := s.After(epoch)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	buf := mustAppend(Position{1, 1}, Record{Kind: KindInput, Packet: []byte{1, 2, 3}}, in(1))
	mustAppend(Position{2, 1}, in(2))
	mustAppend(Position{3, 1}, in(3), in(4))
	clear(buf)
	if e := after(1); len(e) != 5 || e[0].Packet[0] != 1 || e[2].Position != (Position{2, 1}) || e[4].Position != (Position{3, 2}) {
		t.Fatalf("after 1: %+v", e)
	}
	s.Committed(3)
	if e := after(0); len(e) != 2 || e[0].Position != (Position{3, 1}) {
		t.Fatalf("after commit of 3: %+v", e)
	}
	bad := AppendBatch(nil, []Record{in(5)})
	bad[2] = 7 // no such kind
	if _, err := s.Append(Position{3, 3}, bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("a malformed batch: %v", err)
	}
	if st := s.Stats(); st.Records != 2 || st.Held != (Position{3, 2}) {
		t.Fatalf("stats %+v", st)
	}
	s.Committed(5) // a checkpoint beyond the log: the next batch starts epoch 5 or later
	if _, err := s.Append(Position{4, 1}, AppendBatch(nil, []Record{in(1)})); !errors.Is(err, ErrGap) {
		t.Errorf("batch of an epoch before the committed checkpoint: %v", err)
	}
	mustAppend(Position{5, 1}, in(1))
	if st := s.Stats(); st.Records != 1 || st.Bytes <= 0 {
		t.Errorf("stats %+v", st)
	}
}
