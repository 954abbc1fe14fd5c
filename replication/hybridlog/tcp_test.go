// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcpChecksumOK verifies a whole IPv4 TCP packet's header and TCP checksums.
func tcpChecksumOK(p []byte) bool {
	if checksum(p[:20], 0) != 0 {
		return false
	}
	t := p[20:binary.BigEndian.Uint16(p[2:])]
	pseudo := uint32(0)
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	return checksum(t, pseudo+ProtoTCP+uint32(len(t))) == 0
}

func TestSegments(t *testing.T) {
	srv, cli := netip.MustParseAddrPort("10.86.0.200:6379"), netip.MustParseAddrPort("10.86.0.9:40000")
	rst := Reset(srv, cli, 1000)
	s, ok := ParseSegment(rst)
	if !ok || s.Flow.Local != srv || s.Flow.Peer != cli || s.Seq != 1000 || s.Flags != FlagRST || s.Len != 0 || !tcpChecksumOK(rst) {
		t.Fatalf("reset %+v ok %v checksum %v", s, ok, tcpChecksumOK(rst))
	}
	if f, ok := SenderFlow(rst[:24]); !ok || f != s.Flow {
		t.Errorf("sender flow of the first bytes: %v %v, want %v", f, ok, s.Flow)
	}
	tests := []struct {
		name  string
		flags uint8
		seq   uint32
		pay   string
		end   uint32
	}{
		{"data", FlagACK, 10, "hello", 15},
		{"odd length", FlagACK, 10, "hey", 13},
		{"syn", FlagSYN, 10, "", 11},
		{"fin with data", FlagACK | FlagFIN, 0xffffffff, "ab", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tcp4("10.86.0.9", "10.86.0.200", 40000, 6379, tt.seq, tt.flags, []byte(tt.pay))
			binary.BigEndian.PutUint32(p[28:], 5000)
			binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
			setTCPChecksum(p)
			s, ok := ParseSegment(p)
			if !ok || s.End() != tt.end || s.Len != len(tt.pay) || s.Ack != 5000 {
				t.Fatalf("segment %+v end %d, want end %d", s, s.End(), tt.end)
			}
			if got := SetAck(p, 7); got != (tt.flags&FlagACK != 0) {
				t.Fatalf("SetAck = %v", got)
			}
			if s2, _ := ParseSegment(p); (tt.flags&FlagACK != 0 && s2.Ack != 7) || !tcpChecksumOK(p) {
				t.Errorf("after SetAck: ack %d, checksum ok %v", s2.Ack, tcpChecksumOK(p))
			}
		})
	}
	if _, ok := SenderFlow([]byte{0x45, 0}); ok {
		t.Error("a cut header parsed")
	}
}
