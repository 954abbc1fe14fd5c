// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/hybridlog"
)

// echoServer models a container that answers each TCP segment it receives
// with "re:" and the payload on the same connection, from port 80; answer
// can change a reply (a nondeterministic server) and delay makes it late.
type echoServer struct {
	mu     sync.Mutex
	seq    map[uint16]uint32 // next sequence number per client port
	out    chan []byte       // the original run's replies (logOf)
	events []string
	answer func(port uint16, payload string) string
	delay  time.Duration
	judge  func([]byte) bool // the replay's judge; nil: replies go to out
	kept   map[string]bool
}

func newEchoServer() *echoServer {
	return &echoServer{seq: map[uint16]uint32{}, out: make(chan []byte, 64), kept: map[string]bool{},
		answer: func(_ uint16, p string) string { return "re:" + p }}
}

func tcpPacket(src, dst netip.AddrPort, seq uint32, payload string) []byte {
	return buildTCP(src, dst, seq, 0, 0x18, nil, payload)
}

// buildTCP builds an IPv4 TCP packet with options opts (a multiple of 4
// bytes); checksums are left out (nothing here checks them).
func buildTCP(src, dst netip.AddrPort, seq, ack uint32, flags uint8, opts []byte, payload string) []byte {
	hl := 20 + len(opts)
	p := make([]byte, 20+hl+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = hybridlog.ProtoTCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint32(p[24:], seq)
	binary.BigEndian.PutUint32(p[28:], ack)
	p[32], p[33] = byte(hl/4)<<4, flags
	copy(p[40:], opts)
	copy(p[20+hl:], payload)
	return p
}

var (
	server = netip.MustParseAddrPort("10.0.0.200:80")
	client = netip.MustParseAddr("10.0.0.100")
)

func (s *echoServer) Inject(p []byte) error {
	port := binary.BigEndian.Uint16(p[20:])
	payload := string(p[40:])
	s.mu.Lock()
	s.events = append(s.events, "in:"+payload)
	seq := s.seq[port]
	reply := s.answer(port, payload)
	s.seq[port] = seq + uint32(len(reply))
	s.mu.Unlock()
	if reply == "" {
		return nil // this one never answers
	}
	out := tcpPacket(server, netip.AddrPortFrom(client, port), seq, reply)
	if s.judge == nil {
		s.out <- out
		return nil
	}
	go func() {
		time.Sleep(s.delay)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.events = append(s.events, "out:"+reply)
		s.kept[reply] = s.judge(out)
	}()
	return nil
}

// logOf is the log the primary would have made of requests to an echo
// server (each input, then its reply).
func logOf(requests ...struct {
	port    uint16
	payload string
}) []hybridlog.Entry {
	orig := newEchoServer()
	var es []hybridlog.Entry
	add := func(r hybridlog.Record) {
		es = append(es, hybridlog.Entry{Position: hybridlog.Position{Epoch: 1, Index: uint64(len(es) + 1)}, Record: r})
	}
	for _, q := range requests {
		in := tcpPacket(netip.AddrPortFrom(client, q.port), server, 0, q.payload)
		add(hybridlog.Record{Kind: hybridlog.KindInput, Packet: in})
		if err := orig.Inject(in); err != nil {
			panic(err) // a fixture that cannot be built: the test using it fails
		}
		add(hybridlog.Record{Kind: hybridlog.KindOutput, Digest: hybridlog.Digest(<-orig.out)})
	}
	return es
}

type req = struct {
	port    uint16
	payload string
}

// replayEcho replays es against an echo server whose replies come delay
// late, and checks that every input was fed and every reply verified.
func replayEcho(t *testing.T, es []hybridlog.Entry, delay time.Duration) *echoServer {
	t.Helper()
	s := newEchoServer()
	s.delay = delay
	r := newReplayer(es, time.Second)
	s.judge = r.judge
	rep, err := r.run(context.Background(), s.Inject)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(es) / 2; rep.Inputs != n || rep.Outputs != n || rep.Waits != 0 || len(rep.Diverged) != 0 || len(rep.Pending) != 0 {
		t.Fatalf("report %+v", rep)
	}
	return s
}

// TestReplayInterleaving: a late reply holds back the next input of
// another connection until it came out (the log says the reply preceded
// it); every reply matches what was released, so all are dropped and
// nothing diverges.
func TestReplayInterleaving(t *testing.T) {
	s := replayEcho(t, logOf(req{1, "a"}, req{2, "b"}, req{3, "c"}), 20*time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	want := []string{"in:a", "out:re:a", "in:b", "out:re:b", "in:c", "out:re:c"}
	for i := range want {
		if i >= len(s.events) || s.events[i] != want[i] {
			t.Fatalf("order %v, want %v", s.events, want)
		}
	}
	for r, keep := range s.kept {
		if keep {
			t.Errorf("reply %q kept: the clients have it", r)
		}
	}
}

// TestReplayPipelinesAConnection: once the restored connection has sent
// something, its requests are fed without waiting for its own late replies
// (up to replayPipeline of them), and the replies still verify.
func TestReplayPipelinesAConnection(t *testing.T) {
	s := replayEcho(t, logOf(req{1, "a"}, req{1, "b"}, req{1, "c"}), 20*time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := fmt.Sprint(s.events[:4]); got != "[in:a out:re:a in:b in:c]" {
		t.Fatalf("events %v: want the first request answered, then the others fed without waiting", s.events)
	}
}

// TestReplayDivergence: a reply that differs from the released one is
// caught on its connection only, and nothing waits for that connection any
// more; a reply that never comes costs one bound and leaves its flow
// pending.
func TestReplayDivergence(t *testing.T) {
	es := logOf(req{1, "a"}, req{2, "b"}, req{3, "c"}, req{4, "d"}, req{5, "e"})
	s := newEchoServer()
	s.answer = func(port uint16, p string) string {
		switch port {
		case 2:
			return "no:" + p
		case 4:
			return ""
		}
		return "re:" + p
	}
	r := newReplayer(es, 200*time.Millisecond)
	s.judge = r.judge
	rep, err := r.run(context.Background(), s.Inject)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	kept := maps.Clone(s.kept)
	s.mu.Unlock()
	k2 := hybridlog.FlowKey{Proto: hybridlog.ProtoTCP, Local: server, Peer: netip.AddrPortFrom(client, 2)}
	if len(rep.Diverged) != 1 || rep.Diverged[k2] == "" || kept["no:b"] || kept["re:c"] || kept["re:e"] || len(kept) != 4 {
		t.Fatalf("report %+v, kept %v", rep, kept)
	}
	if rep.Waits != 1 || len(rep.Pending) != 1 || rep.Pending[0].Peer.Port() != 4 {
		t.Fatalf("waits %d, pending %v: want one wait, for the reply on port 4", rep.Waits, rep.Pending)
	}
	// Both diverged and pending connections are reset on both sides: the
	// container at the end of what it was fed, the client at the end of
	// what the log says it was sent ("re:b" and "re:d", 4 bytes from 0);
	// the container also at the acknowledgement its diverged reply carried
	// (0 in this model).
	resets := rep.Resets()
	toContainer, toClients := r.resets(resets)
	if len(resets) != 2 || len(toContainer) != 3 || len(toClients) != 2 {
		t.Fatalf("resets %v: %d to the container, %d to clients", resets, len(toContainer), len(toClients))
	}
	for _, p := range toClients {
		seg, _ := hybridlog.ParseSegment(p)
		if seg.Flags != hybridlog.FlagRST || seg.Seq != 4 || seg.Flow.Local != server {
			t.Errorf("reset to a client: %+v", seg)
		}
	}
	for _, p := range toContainer {
		seg, _ := hybridlog.ParseSegment(p)
		if seg.Flags != hybridlog.FlagRST || seg.Seq > 1 || seg.Flow.Peer != server {
			t.Errorf("reset to the container: %+v (it was fed one byte from 0)", seg)
		}
	}
	if !flowMatch(resets)(tcpPacket(server, netip.AddrPortFrom(client, 4), 9, "x")[:24]) || flowMatch(resets)(tcpPacket(server, netip.AddrPortFrom(client, 3), 9, "x")) {
		t.Error("flowMatch does not tell the reset connections from the others")
	}
}

// TestReplayWaitBounded: a connection that stops answering costs one bound
// (its later requests do not wait for it again), and however many stop,
// the waits together take no more than the budget: the rest is fed without
// waiting, and the connections that did answer still verify.
func TestReplayWaitBounded(t *testing.T) {
	var reqs []req
	for round := 0; round < 3; round++ {
		for port := uint16(1); port <= 10; port++ {
			reqs = append(reqs, req{port, string(rune('a' + round))})
		}
	}
	es := logOf(reqs...)
	s := newEchoServer()
	s.answer = func(port uint16, p string) string {
		if port <= 8 {
			return "" // eight connections never answer again
		}
		return "re:" + p
	}
	const bound = 100 * time.Millisecond
	r := newReplayer(es, bound)
	s.judge = r.judge
	start := time.Now()
	rep, err := r.run(context.Background(), s.Inject)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The budget, the final wait and a margin for a slow machine.
	if limit := r.budget + bound + 500*time.Millisecond; took > limit {
		t.Errorf("replay took %v, want at most %v", took, limit)
	}
	if rep.Inputs != len(reqs) || rep.Waits != replayBudgetBounds || len(rep.Pending) != 8 || len(rep.Diverged) != 0 {
		t.Fatalf("report %+v: want every input fed, the budget's waits, the 8 silent ones pending", rep)
	}
	for _, k := range rep.Pending {
		if k.Peer.Port() > 8 {
			t.Errorf("connection %v answered but is pending", k)
		}
	}
}

// tcpTS builds an IPv4 TCP packet with flags and a timestamp option.
func tcpTS(src, dst netip.AddrPort, seq, ack uint32, flags uint8, tsval, tsecr uint32, payload string) []byte {
	opt := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(opt[4:], tsval)
	binary.BigEndian.PutUint32(opt[8:], tsecr)
	return buildTCP(src, dst, seq, ack, flags, opt, payload)
}

// TestReplayAcceptedConnection: a connection accepted after the checkpoint
// is accepted again with other numbers; the client's logged packets are
// fed translated onto the replay's (acknowledgement and timestamp echo),
// its reply verifies against the primary's by offset, and the translation
// after the replay carries the container's numbers onto the primary's,
// timestamps by the wall clock.
func TestReplayAcceptedConnection(t *testing.T) {
	cli := netip.AddrPortFrom(client, 40000)
	t0 := time.Now().Add(-time.Second) // the primary's SYN-ACK, a second before the replay's
	var origISN, replayISN, origTS, replayTS uint32 = 5000, 9000, 100000, 700
	es := []hybridlog.Entry{
		{Record: hybridlog.Record{Kind: hybridlog.KindInput, Packet: tcpTS(cli, server, 100, 0, 0x02, 50, 0, "")}},
		{Record: hybridlog.Record{Kind: hybridlog.KindOutput, At: t0, Digest: hybridlog.Digest(tcpTS(server, cli, origISN, 101, 0x12, origTS, 50, ""))}},
		{Record: hybridlog.Record{Kind: hybridlog.KindInput, Packet: tcpTS(cli, server, 101, origISN+1, 0x10, 51, origTS, "")}},
		{Record: hybridlog.Record{Kind: hybridlog.KindInput, Packet: tcpTS(cli, server, 101, origISN+1, 0x18, 52, origTS+3, "a")}},
		{Record: hybridlog.Record{Kind: hybridlog.KindOutput, At: t0, Digest: hybridlog.Digest(tcpTS(server, cli, origISN+1, 102, 0x18, origTS+4, 52, "re:a"))}},
	}
	for i := range es {
		es[i].Position = hybridlog.Position{Epoch: 1, Index: uint64(i + 1)}
	}
	r := newReplayer(es, time.Second)
	var fed []hybridlog.Segment
	var ecrs []uint32
	inject := func(p []byte) error {
		s, _ := hybridlog.ParseSegment(p)
		_, ecr, _ := hybridlog.Timestamps(p)
		fed, ecrs = append(fed, s), append(ecrs, ecr)
		switch {
		case s.Flags&hybridlog.FlagSYN != 0:
			r.judge(tcpTS(server, cli, replayISN, 101, 0x12, replayTS, 50, ""))
		case s.Len > 0:
			if keep := r.judge(tcpTS(server, cli, replayISN+1, 102, 0x18, replayTS+4, 52, "re:a")); keep {
				t.Error("the replayed reply the client has was kept")
			}
		}
		return nil
	}
	rep, err := r.run(context.Background(), inject)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Diverged) != 0 || len(rep.Pending) != 0 || len(rep.Accepted) != 1 || len(rep.Resets()) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if len(fed) != 3 || fed[1].Ack != replayISN+1 || fed[2].Ack != replayISN+1 || ecrs[1] != replayTS || ecrs[2] != replayTS+3 {
		t.Fatalf("fed acks %+v echoes %v: want the replay's numbers", fed, ecrs)
	}
	tr := r.translator(nil)
	k := hybridlog.FlowKey{Proto: hybridlog.ProtoTCP, Local: server, Peer: cli}
	got, ok := tr[k]
	if !ok || got.Seq != origISN-replayISN || !got.HasTS {
		t.Fatalf("translator %+v", tr)
	}
	// By the wall clock: the replay's SYN-ACK came about a second after the
	// primary's, so its timestamps map a second further.
	if d := int64(got.TS) - int64(origTS-replayTS); d < 900 || d > 1500 {
		t.Errorf("timestamp translation %d ms beyond the SYN-ACK's mapping, want about 1000", d)
	}
	if len(r.translator([]hybridlog.FlowKey{k})) != 0 {
		t.Error("a reset connection is translated")
	}
}
