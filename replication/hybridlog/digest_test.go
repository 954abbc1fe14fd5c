// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcp4 builds an IPv4 TCP packet (no options).
func tcp4(src, dst string, sport, dport uint16, seq uint32, flags uint8, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, ProtoTCP
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	l4 := p[20:]
	binary.BigEndian.PutUint16(l4, sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], seq)
	l4[12] = 5 << 4
	l4[13] = flags
	copy(l4[20:], payload)
	return p
}

// tcp6 builds an IPv6 TCP packet.
func tcp6(src, dst string, sport, dport uint16, seq uint32, flags uint8, payload []byte) []byte {
	p := make([]byte, 60+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(20+len(payload)))
	p[6], p[7] = ProtoTCP, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	l4 := p[40:]
	binary.BigEndian.PutUint16(l4, sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], seq)
	l4[12] = 5 << 4
	l4[13] = flags
	copy(l4[20:], payload)
	return p
}

func TestDigest(t *testing.T) {
	a := tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 7, 0x18, []byte("+OK\r\n"))
	d := Digest(a)
	if d.Proto != ProtoTCP || d.Seq != 7 || d.Len != 5 || d.Flags != 0 || d.SrcPort != 6379 || d.Dst != netip.MustParseAddr("10.0.0.100") {
		t.Fatalf("digest %v", d)
	}
	// The same bytes at the same sequence number, another ACK number and
	// window: the same digest (a replay acknowledges at other moments).
	b := append([]byte{}, a...)
	binary.BigEndian.PutUint32(b[28:], 999)
	binary.BigEndian.PutUint16(b[34:], 512)
	if !Digest(b).Equal(d) {
		t.Error("ACK number or window changed the digest")
	}
	tests := []struct {
		name string
		p    []byte
	}{
		{"other payload", tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 7, 0x18, []byte("+NO\r\n"))},
		{"other sequence", tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 8, 0x18, []byte("+OK\r\n"))},
		{"FIN", tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 7, 0x19, []byte("+OK\r\n"))},
		{"other flow", tcp4("10.0.0.200", "10.0.0.101", 6379, 40000, 7, 0x18, []byte("+OK\r\n"))},
	}
	for _, tc := range tests {
		if Digest(tc.p).Equal(d) {
			t.Errorf("%s: same digest", tc.name)
		}
	}
	if rst := Digest(tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 7, 0x14, nil)); rst.Flags != FlagRST || rst.Len != 0 {
		t.Errorf("RST digest %v", rst)
	}
	if d6 := Digest(tcp6("fd00::2", "fd00::1", 80, 50000, 1, 0x12, nil)); d6.Proto != ProtoTCP || d6.Flags != FlagSYN || !d6.Src.Is6() {
		t.Errorf("IPv6 SYN-ACK digest %v", d6)
	}
}

func TestDigestWhole(t *testing.T) {
	frag := tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 7, 0x18, []byte("+OK\r\n"))
	frag[6] = 0x20 // more fragments
	udp := tcp4("10.0.0.200", "10.0.0.100", 53, 40000, 0, 0, []byte("answer"))
	udp[9] = ProtoUDP
	tests := []struct {
		name string
		p    []byte
	}{
		{"fragment", frag},
		{"udp", udp},
		{"garbage", []byte{1, 2, 3}},
		{"empty", nil},
		{"short TCP header", tcp4("10.0.0.1", "10.0.0.2", 1, 2, 3, 0, nil)[:30]},
	}
	for _, tc := range tests {
		d := Digest(tc.p)
		if !d.Whole() || d.Len != uint32(len(tc.p)) || d.Seq != 0 || d.Flags != 0 {
			t.Errorf("%s: digest %v, want a whole-packet one", tc.name, d)
		}
		if tc.name == "udp" && (d.Proto != ProtoUDP || d.SrcPort != 53) {
			t.Errorf("udp: digest %v", d)
		}
		// A digest always encodes and decodes.
		got, err := DecodeBatch(AppendBatch(nil, []Record{{Kind: KindOutput, Digest: d}}))
		if err != nil || !got[0].Digest.Equal(d) {
			t.Errorf("%s: round trip %v, %v", tc.name, got, err)
		}
	}
}
