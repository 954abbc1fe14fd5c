// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"slices"
	"strings"
	"testing"
)

// TestJudgedGate: a judge drops what it does not keep at once; DropHeld
// drops kept packets that match; ReleaseAll accepts the rest in order and
// ends judging.
func TestJudgedGate(t *testing.T) {
	tests := []struct {
		name              string
		ids               []uint32
		keep              func(b byte) bool
		dropHeld          func(b byte) bool
		accepted, dropped []uint32
	}{
		{"keep all", []uint32{1, 2, 3}, func(byte) bool { return true }, nil, []uint32{1, 2, 3}, nil},
		{"drop odd at once", []uint32{1, 2, 3, 4}, func(b byte) bool { return b%2 == 0 }, nil, []uint32{2, 4}, []uint32{1, 3}},
		{"drop held of one flow", []uint32{1, 2, 3, 4, 5}, func(b byte) bool { return b != 5 }, func(b byte) bool { return b == 2 || b == 4 },
			[]uint32{1, 3}, []uint32{5, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fq := newFakeQueue()
			g := NewOutputGate(fq, discardLog())
			g.SetJudge(func(p []byte) bool { return tt.keep(p[0]) })
			var pkts []Packet
			for _, id := range tt.ids {
				fq.queued = append(fq.queued, id)
				pkts = append(pkts, Packet{ID: id, CapLen: 1, Payload: []byte{byte(id)}})
			}
			if err := g.admit(pkts); err != nil {
				t.Fatal(err)
			}
			if tt.dropHeld != nil {
				if err := g.DropHeld(func(h []byte) bool { return tt.dropHeld(h[0]) }); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.ReleaseAll(); err != nil {
				t.Fatal(err)
			}
			// After ReleaseAll the judge is gone: everything passes.
			fq.queued = append(fq.queued, 9)
			if err := g.admit([]Packet{{ID: 9, CapLen: 1, Payload: []byte{9}}}); err != nil {
				t.Fatal(err)
			}
			want := append(slices.Clone(tt.accepted), 9)
			if !slices.Equal(fq.accepted, want) || !slices.Equal(fq.dropped, tt.dropped) {
				t.Errorf("accepted %v dropped %v, want %v and %v", fq.accepted, fq.dropped, want, tt.dropped)
			}
			if st := g.Stats(); st.Held != 0 || st.Dropped != uint64(len(tt.dropped)) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestJudgeNeedsWholePackets: a packet the queue cut short stops the gate.
func TestJudgeNeedsWholePackets(t *testing.T) {
	fq := newFakeQueue()
	g := NewOutputGate(fq, discardLog())
	g.SetJudge(func([]byte) bool { return true })
	fq.queued = append(fq.queued, 1)
	err := g.admit([]Packet{{ID: 1, CapLen: 1500, Payload: make([]byte, 256)}})
	if err == nil || !strings.Contains(err.Error(), "whole packets") {
		t.Fatalf("err %v, want a refusal of a cut packet", err)
	}
}

// TestRewrite: what passes is rewritten where the rewrite says so, in
// order: the judged packets ReleaseAll releases, then pass-through, and an
// input hold's accepted packets.
func TestRewrite(t *testing.T) {
	upper := func(p []byte) bool {
		if p[0] < 'a' {
			return false
		}
		p[0] -= 'a' - 'A'
		return true
	}
	pkt := func(fq *fakeQueue, id uint32, c byte) Packet {
		fq.queued = append(fq.queued, id)
		return Packet{ID: id, CapLen: 1, Payload: []byte{c}}
	}
	fq := newFakeQueue()
	g := NewOutputGate(fq, discardLog())
	g.SetJudge(func([]byte) bool { return true })
	if err := g.admit([]Packet{pkt(fq, 1, 'a'), pkt(fq, 2, 'B'), pkt(fq, 3, 'c')}); err != nil {
		t.Fatal(err)
	}
	g.SetRewrite(upper)
	if err := g.ReleaseAll(); err != nil {
		t.Fatal(err)
	}
	if err := g.admit([]Packet{pkt(fq, 4, 'D'), pkt(fq, 5, 'e'), pkt(fq, 6, 'F')}); err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{1: "A", 3: "C", 5: "E"}
	if !slices.Equal(fq.accepted, []uint32{1, 2, 3, 4, 5, 6}) || len(fq.payloads) != 3 {
		t.Fatalf("accepted %v, rewritten %v", fq.accepted, fq.payloads)
	}
	for id, p := range want {
		if fq.payloads[id] != p {
			t.Errorf("packet %d went out as %q, want %q", id, fq.payloads[id], p)
		}
	}

	iq := newFakeQueue()
	h := NewInputHold(iq, discardLog())
	h.SetRewrite(upper)
	if err := h.admit([]Packet{pkt(iq, 7, 'G'), pkt(iq, 8, 'h')}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(iq.accepted, []uint32{7, 8}) || iq.payloads[8] != "H" {
		t.Errorf("input: accepted %v, rewritten %v", iq.accepted, iq.payloads)
	}
}
