// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

const (
	srv = "10.0.0.200"
	cli = "10.0.0.100"
)

// seg is an output of the server to the client on port cport.
func seg(cport uint16, seq uint32, flags uint8, payload string) []byte {
	return tcp4(srv, cli, 6379, cport, seq, flags|0x10, []byte(payload))
}

func outputs(pkts ...[]byte) []Entry {
	var es []Entry
	for i, p := range pkts {
		es = append(es, Entry{Position{1, uint64(i + 1)}, Record{Kind: KindOutput, At: time.Unix(0, int64(i)), Digest: Digest(p)}})
	}
	return es
}

func key(cport uint16) FlowKey { return Digest(seg(cport, 0, 0, "")).Flow() }

func TestVerifierStream(t *testing.T) {
	v := NewVerifier(outputs(
		seg(1, 1000, 0, "hello "), seg(1, 1006, 0, "world"), seg(1, 1011, 0, ""), seg(1, 1011, FlagFIN, ""),
	))
	if v.Expected() != 3 {
		t.Fatalf("expected %d outputs, want 3 (the pure ACK is not compared)", v.Expected())
	}
	steps := []struct {
		p       []byte
		want    Verdict
		covered int
	}{
		{seg(1, 1000, 0, "hello world"), Drop, 2}, // cut differently: still the same bytes
		{seg(1, 1011, FlagFIN, ""), Drop, 3},
		{seg(1, 990, 0, "0123456789"), Drop, 3}, // bytes from before the checkpoint
		{seg(1, 1012, 0, "more"), Send, 3},      // beyond what was released
		{seg(2, 1, 0, "other flow"), Send, 3},
	}
	for i, s := range steps {
		if got := v.Output(s.p); got != s.want || v.Covered() != s.covered {
			t.Fatalf("step %d: %s with %d covered, want %s with %d", i, got, v.Covered(), s.want, s.covered)
		}
	}
	if len(v.Diverged()) != 0 || len(v.Pending()) != 0 {
		t.Fatalf("diverged %v, pending %v", v.Diverged(), v.Pending())
	}
}

func TestVerifierDivergence(t *testing.T) {
	v := NewVerifier(outputs(seg(1, 5000, 0, "+OK\r\n"), seg(2, 100, 0, "$1\r\nv\r\n")))
	if got := v.Output(seg(1, 5000, 0, "+NO\r\n")); got != Diverged {
		t.Fatalf("other bytes at the same place: %s", got)
	}
	if got := v.Output(seg(1, 5005, 0, "next")); got != Diverged {
		t.Fatalf("a diverged flow sends on: %s", got)
	}
	if got := v.Output(seg(2, 100, 0, "$1\r\nv\r\n")); got != Drop {
		t.Fatalf("the other flow: %s", got)
	}
	if d := v.Diverged(); len(d) != 1 || d[key(1)] == "" {
		t.Fatalf("diverged %v", d)
	}
	// A byte sent twice, differently, inside a logged segment.
	v = NewVerifier(outputs(seg(1, 0, 0, "abcdefgh")))
	v.Output(seg(1, 0, 0, "abcd"))
	if got := v.Output(seg(1, 2, 0, "XX")); got != Diverged {
		t.Fatalf("a resent byte that differs: %s", got)
	}
}

func TestVerifierHold(t *testing.T) {
	v := NewVerifier(outputs(seg(1, 0, 0, "abcd"), seg(1, 4, 0, "efgh")))
	if got := v.Output(seg(1, 4, 0, "efghNEW!")); got != Hold {
		t.Fatalf("new bytes before the flow's first logged bytes came again: %s", got)
	}
	if v.Covered() != 0 || len(v.Pending()) != 1 {
		t.Fatalf("covered %d, pending %v", v.Covered(), v.Pending())
	}
	if got := v.Output(seg(1, 0, 0, "abcd")); got != Drop || v.Covered() != 2 {
		t.Fatalf("the missing bytes: %s, covered %d", got, v.Covered())
	}
	if got := v.Output(seg(1, 4, 0, "efghNEW!")); got != Send {
		t.Fatalf("held packet asked again: %s", got)
	}
}

// TestVerifierNewConnection: a connection accepted after the checkpoint is
// compared from each run's own SYN-ACK, whose sequence numbers differ.
func TestVerifierNewConnection(t *testing.T) {
	v := NewVerifier(outputs(seg(7, 7000, FlagSYN, ""), seg(7, 7001, 0, "hi")))
	if got := v.Output(seg(7, 9000, FlagSYN, "")); got != Drop {
		t.Fatalf("replayed SYN-ACK: %s", got)
	}
	if got := v.Output(seg(7, 9001, 0, "hi")); got != Drop || v.Covered() != 2 {
		t.Fatalf("its data: %s, covered %d", got, v.Covered())
	}
	if d := int32(v.SeqDelta(key(7))); d != 7000-9000 {
		t.Fatalf("sequence delta %d", d)
	}
	w := NewVerifier(outputs(seg(7, 7000, FlagSYN, ""), seg(7, 7001, 0, "hi")))
	if got := w.Output(seg(7, 9001, 0, "hi")); got != Diverged {
		t.Fatalf("data before the SYN-ACK: %s", got)
	}
}

func TestVerifierDatagrams(t *testing.T) {
	udp := func(payload string) []byte {
		p := tcp4(srv, cli, 53, 4000, 0, 0, []byte(payload))
		p[9] = ProtoUDP
		return p
	}
	v := NewVerifier(outputs(udp("one"), udp("two")))
	for i, s := range []struct {
		p    []byte
		want Verdict
	}{{udp("one"), Drop}, {udp("two"), Drop}, {udp("three"), Send}} {
		if got := v.Output(s.p); got != s.want {
			t.Fatalf("datagram %d: %s, want %s", i, got, s.want)
		}
	}
	w := NewVerifier(outputs(udp("one")))
	if got := w.Output(udp("uno")); got != Diverged {
		t.Fatalf("another datagram: %s", got)
	}
}

// TestOutputsBefore: an input waits for the outputs of other flows before
// it and for its own flow's but the last slack; pure ACKs never count; an
// input of no flow waits for everything.
func TestOutputsBefore(t *testing.T) {
	in := func(cport uint16) Entry { // a client's request on connection cport
		return Entry{Record: Record{Kind: KindInput, Packet: tcp4(cli, srv, cport, 6379, 0, 0x18, []byte("x"))}}
	}
	out := func(cport uint16, payload string) Entry { return outputs(seg(cport, 0, 0, payload))[0] }
	icmp := Entry{Record: Record{Kind: KindInput, Packet: []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}}}
	for _, c := range []struct {
		name    string
		entries []Entry
		slack   int
		want    []int // for each entry
	}{
		{"pure ACK not counted", []Entry{out(1, "a"), out(1, ""), in(2), out(1, "b")}, 0, []int{0, 1, 1, 1}},
		{"no slack: every output", []Entry{in(1), out(1, "a"), in(1), out(1, "b"), in(1)}, 0, []int{0, 0, 1, 1, 2}},
		{"own flow pipelined", []Entry{in(1), out(1, "a"), in(1), out(1, "b"), in(1), out(1, "c"), in(1)}, 2, []int{0, 0, 0, 1, 0, 2, 1}},
		{"other flow waited for", []Entry{in(1), out(1, "a"), in(2), out(2, "b"), in(1)}, 4, []int{0, 0, 1, 1, 2}},
		{"other flow's run before own", []Entry{out(2, "x"), in(1), out(1, "a"), in(1), out(1, "b"), in(1)}, 4, []int{0, 1, 1, 1, 2, 1}},
		{"no flow: everything", []Entry{in(1), out(1, "a"), icmp}, 4, []int{0, 0, 1}},
	} {
		if got := OutputsBefore(c.entries, c.slack); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestVerifierDivergedCoverage: the outputs of a diverged flow are covered
// when the replay has sent their positions again, whatever the bytes (so
// that the replay still feeds the flow's inputs one answer at a time), and
// all at once after Abandon.
func TestVerifierDivergedCoverage(t *testing.T) {
	v := NewVerifier(outputs(
		seg(1, 100, 0, ":17\r\n"), seg(2, 500, 0, "+OK\r\n"), seg(1, 105, 0, ":18\r\n"), seg(1, 110, 0, ":19\r\n"),
	))
	steps := []struct {
		p       []byte
		want    Verdict
		covered int
	}{
		{seg(1, 100, 0, ":18\r\n"), Diverged, 1}, // the first reply differs: it came out all the same
		{seg(2, 500, 0, "+OK\r\n"), Drop, 2},
		{seg(1, 105, 0, ":1"), Diverged, 2}, // part of the next reply: not yet
		{seg(1, 107, 0, "9\r\n"), Diverged, 3},
	}
	for i, s := range steps {
		if got := v.Output(s.p); got != s.want || v.Covered() != s.covered {
			t.Fatalf("step %d: %s with %d covered, want %s with %d", i, got, v.Covered(), s.want, s.covered)
		}
	}
	v.Abandon()
	if v.Covered() != v.Expected() {
		t.Fatalf("after Abandon: %d of %d covered", v.Covered(), v.Expected())
	}
	if d := v.Diverged(); len(d) != 1 || d[key(1)] == "" || len(v.Pending()) != 0 {
		t.Fatalf("diverged %v, pending %v", d, v.Pending())
	}
}

// TestVerifierGiveUp: outputs given up count as covered, their flow's
// later outputs are not waited for (the flow stalled), and the flow stays
// pending until its bytes come out.
func TestVerifierGiveUp(t *testing.T) {
	v := NewVerifier(outputs(seg(1, 100, 0, "queued before"), seg(2, 500, 0, "+OK\r\n"), seg(1, 113, 0, " the seal"), seg(2, 505, 0, "+OK\r\n")))
	v.GiveUp(1)
	if v.Covered() != 1 {
		t.Fatalf("covered %d after giving up the first output, want 1", v.Covered())
	}
	// Flow 1's next output is not waited for: covered runs on to flow 2's
	// second one.
	if got := v.Output(seg(2, 500, 0, "+OK\r\n")); got != Drop || v.Covered() != 3 {
		t.Fatalf("the other flow: %s, covered %d, want 3", got, v.Covered())
	}
	if p := v.Pending(); len(p) != 2 || !slices.Contains(p, key(1)) {
		t.Fatalf("pending %v, want flow 1 (and flow 2, its second reply still to come)", p)
	}
	// Its bytes do come out after all: verified.
	if got := v.Output(seg(1, 100, 0, "queued before the seal")); got != Drop || v.Covered() != 3 || len(v.Pending()) != 1 {
		t.Fatalf("flow 1 at last: %s, covered %d, pending %v", got, v.Covered(), v.Pending())
	}
	if got := v.Output(seg(2, 505, 0, "+OK\r\n")); got != Drop || v.Covered() != 4 || len(v.Pending()) != 0 {
		t.Fatalf("flow 2 at last: %s, covered %d, pending %v", got, v.Covered(), v.Pending())
	}
	// Giving up outputs that did come out stalls no flow.
	w := NewVerifier(outputs(seg(1, 100, 0, "a"), seg(2, 500, 0, "b"), seg(1, 101, 0, "c")))
	w.Output(seg(1, 100, 0, "a"))
	w.GiveUp(2)
	if w.Covered() != 2 {
		t.Fatalf("covered %d after giving up an output of flow 2 only, want 2 (flow 1's next still awaited)", w.Covered())
	}
}
