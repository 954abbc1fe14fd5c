// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcpWithOptions builds an IPv4 TCP packet with the timestamp option and a
// SACK option of the given blocks, checksums right.
func tcpWithOptions(src, dst string, sport, dport uint16, seq, ack uint32, tsval, tsecr uint32, sack ...uint32) []byte {
	opts := []byte{1, 1, optTimestamp, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(opts[4:], tsval)
	binary.BigEndian.PutUint32(opts[8:], tsecr)
	if len(sack) > 0 {
		s := []byte{1, 1, optSACK, byte(2 + 4*len(sack))}
		for _, e := range sack {
			s = binary.BigEndian.AppendUint32(s, e)
		}
		opts = append(opts, s...)
	}
	p := tcp4(src, dst, sport, dport, seq, FlagACK, []byte("data"))
	hdr := append(append(append([]byte(nil), p[:40]...), opts...), p[40:]...)
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(hdr)))
	hdr[32] = byte((20+len(opts))/4) << 4
	binary.BigEndian.PutUint32(hdr[28:], ack)
	binary.BigEndian.PutUint16(hdr[10:], checksum(hdr[:20], 0))
	setTCPChecksum(hdr)
	return hdr
}

func TestTranslator(t *testing.T) {
	srv, cli := netip.MustParseAddrPort("10.86.0.200:80"), netip.MustParseAddrPort("10.86.0.9:40000")
	k := FlowKey{Proto: ProtoTCP, Local: srv, Peer: cli}
	tr := Translator{k: {Seq: 1000, TS: 50, HasTS: true}}

	out := tcpWithOptions("10.86.0.200", "10.86.0.9", 80, 40000, 5, 77, 300, 9)
	if !tr.Outbound(out) {
		t.Fatal("outbound packet of the connection not translated")
	}
	s, _ := ParseSegment(out)
	val, ecr, ok := Timestamps(out)
	if s.Seq != 1005 || s.Ack != 77 || !ok || val != 350 || ecr != 9 || !tcpChecksumOK(out) {
		t.Errorf("outbound: seq %d ack %d ts %d/%d %v, checksum %v", s.Seq, s.Ack, val, ecr, ok, tcpChecksumOK(out))
	}

	in := tcpWithOptions("10.86.0.9", "10.86.0.200", 40000, 80, 77, 1100, 12, 350, 1200, 1300, 1400, 1500)
	if !tr.Inbound(in) {
		t.Fatal("inbound packet of the connection not translated")
	}
	s, _ = ParseSegment(in)
	val, ecr, _ = Timestamps(in)
	var edges []uint32
	tcpOptions(in[20:], func(kind byte, data []byte) {
		if kind == optSACK {
			for i := 0; i+4 <= len(data); i += 4 {
				edges = append(edges, binary.BigEndian.Uint32(data[i:]))
			}
		}
	})
	if s.Seq != 77 || s.Ack != 100 || val != 12 || ecr != 300 || len(edges) != 4 || edges[0] != 200 || edges[3] != 500 || !tcpChecksumOK(in) {
		t.Errorf("inbound: seq %d ack %d ts %d/%d sack %v, checksum %v", s.Seq, s.Ack, val, ecr, edges, tcpChecksumOK(in))
	}

	other := tcpWithOptions("10.86.0.200", "10.86.0.9", 80, 40001, 5, 77, 300, 9)
	if tr.Outbound(other) || tr.Inbound(other) {
		t.Error("a packet of another connection was translated")
	}
}

// FuzzTCPPacket: the packet readers that see what the network sends (the
// segment, its options, a translation of it) never panic.
func FuzzTCPPacket(f *testing.F) {
	f.Add(tcpWithOptions("10.86.0.9", "10.86.0.200", 40000, 80, 77, 1100, 12, 350, 1200, 1300))
	f.Add(Reset(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), 5))
	f.Add([]byte{0x45, 0, 0, 20})
	tr := Translator{
		{Proto: ProtoTCP, Local: netip.MustParseAddrPort("10.86.0.200:80"), Peer: netip.MustParseAddrPort("10.86.0.9:40000")}: {Seq: 3, TS: 4, HasTS: true},
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		ParseSegment(p)
		SenderFlow(p)
		Timestamps(p)
		tr.Inbound(append([]byte(nil), p...))
		tr.Outbound(append([]byte(nil), p...))
		SetAck(append([]byte(nil), p...), 9)
	})
}
