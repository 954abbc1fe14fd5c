// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"encoding/binary"
	"net/netip"
)

// FlagACK is the TCP ACK flag (not part of a digest).
const FlagACK = 0x10

// Segment is what a replay reads of a TCP packet besides its digest.
type Segment struct {
	Flow     FlowKey // as its sender sees it: Local is the source
	Seq, Ack uint32
	Flags    uint8 // all of them
	Len      int   // payload bytes
}

// End is the sequence number after the segment (SYN and FIN count one).
func (s Segment) End() uint32 {
	e := s.Seq + uint32(s.Len)
	if s.Flags&FlagSYN != 0 {
		e++
	}
	if s.Flags&FlagFIN != 0 {
		e++
	}
	return e
}

// ParseSegment reads a whole TCP packet (from its IP header on).
func ParseSegment(p []byte) (Segment, bool) {
	proto, src, dst, l4, ok := ipHeader(p)
	if !ok || proto != ProtoTCP || len(l4) < 20 {
		return Segment{}, false
	}
	off := int(l4[12]>>4) * 4
	if off < 20 || off > len(l4) {
		return Segment{}, false
	}
	return Segment{
		Flow: FlowKey{Proto: ProtoTCP, Local: netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4)),
			Peer: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))},
		Seq: binary.BigEndian.Uint32(l4[4:]), Ack: binary.BigEndian.Uint32(l4[8:]), Flags: l4[13], Len: len(l4) - off,
	}, true
}

// SenderFlow is the flow of an IPv4 TCP or UDP packet as its sender sees
// it, from its first bytes only (the IP header and the ports): what a gate
// remembers of a held packet.
func SenderFlow(head []byte) (FlowKey, bool) {
	if len(head) < 20 || head[0]>>4 != 4 {
		return FlowKey{}, false
	}
	ihl := int(head[0]&0x0f) * 4
	proto := head[9]
	if ihl < 20 || len(head) < ihl+4 || (proto != ProtoTCP && proto != ProtoUDP) || binary.BigEndian.Uint16(head[6:])&0x1fff != 0 {
		return FlowKey{}, false
	}
	return FlowKey{Proto: proto,
		Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte(head[12:16])), binary.BigEndian.Uint16(head[ihl:])),
		Peer:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(head[16:20])), binary.BigEndian.Uint16(head[ihl+2:]))}, true
}

// Reset builds an IPv4 TCP RST from one end of a connection to the other,
// at sequence number seq (the receiver accepts it only at exactly the next
// sequence number it expects; RFC 5961).
func Reset(from, to netip.AddrPort, seq uint32) []byte {
	p := make([]byte, 40)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], 40)
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = ProtoTCP
	s4, d4 := from.Addr().As4(), to.Addr().As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	t := p[20:]
	binary.BigEndian.PutUint16(t, from.Port())
	binary.BigEndian.PutUint16(t[2:], to.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4
	t[13] = FlagRST
	setTCPChecksum(p)
	return p
}

// SetAck sets the acknowledgement number of a whole IPv4 TCP packet that
// carries one, in place.
func SetAck(p []byte, ack uint32) bool {
	s, ok := ParseSegment(p)
	if !ok || p[0]>>4 != 4 || s.Flags&FlagACK == 0 {
		return false
	}
	binary.BigEndian.PutUint32(p[int(p[0]&0x0f)*4+8:], ack)
	setTCPChecksum(p)
	return true
}

// setTCPChecksum recomputes the TCP checksum of a whole IPv4 packet.
func setTCPChecksum(p []byte) {
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:]))
	t := p[ihl:total]
	t[16], t[17] = 0, 0
	pseudo := uint32(0)
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	pseudo += ProtoTCP + uint32(len(t))
	binary.BigEndian.PutUint16(t[16:], checksum(t, pseudo))
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
