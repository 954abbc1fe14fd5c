// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers the digest looks into.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// TCP flags kept in a digest: the ones that change a connection's state.
// ACK numbers and windows are left out on purpose: a replay acknowledges
// the same bytes at other moments.
const (
	FlagFIN   = 0x01
	FlagSYN   = 0x02
	FlagRST   = 0x04
	flagsKept = FlagFIN | FlagSYN | FlagRST
)

// OutputDigest identifies what an output packet told its receiver. For TCP:
// the flow, the sequence range of the payload, the SYN/FIN/RST flags and a
// hash of the payload; a replayed packet that carries the same bytes at the
// same sequence numbers has the same digest. For anything else (UDP, ICMP,
// fragments, what does not parse): the whole packet's length and hash.
type OutputDigest struct {
	Proto            uint8
	Src, Dst         netip.Addr // zero unless TCP or UDP
	SrcPort, DstPort uint16
	Seq              uint32 // TCP: first sequence number
	Len              uint32 // TCP: payload bytes; otherwise the packet's length
	Flags            uint8  // TCP: FIN, SYN, RST
	Hash             [16]byte
}

// Whole reports whether the digest covers the whole packet (not TCP).
func (d OutputDigest) Whole() bool { return d.Proto != ProtoTCP }

func (d OutputDigest) String() string {
	if d.Whole() {
		return fmt.Sprintf("proto %d %s:%d→%s:%d len %d hash %x", d.Proto, d.Src, d.SrcPort, d.Dst, d.DstPort, d.Len, d.Hash[:4])
	}
	return fmt.Sprintf("tcp %s:%d→%s:%d seq %d+%d flags %#x hash %x", d.Src, d.SrcPort, d.Dst, d.DstPort, d.Seq, d.Len, d.Flags, d.Hash[:4])
}

// Equal compares two digests as encoded (an unspecified address and no
// address are the same there).
func (d OutputDigest) Equal(o OutputDigest) bool {
	var a, b [digestSize]byte
	return bytes.Equal(d.append(a[:0]), o.append(b[:0]))
}

func (d OutputDigest) append(dst []byte) []byte {
	dst = append(dst, d.Proto)
	src, dstA := addr16(d.Src), addr16(d.Dst)
	dst = append(dst, src[:]...)
	dst = binary.BigEndian.AppendUint16(dst, d.SrcPort)
	dst = append(dst, dstA[:]...)
	dst = binary.BigEndian.AppendUint16(dst, d.DstPort)
	dst = binary.BigEndian.AppendUint32(dst, d.Seq)
	dst = binary.BigEndian.AppendUint32(dst, d.Len)
	dst = append(dst, d.Flags)
	return append(dst, d.Hash[:]...)
}

func decodeDigest(b []byte) (OutputDigest, error) {
	var d OutputDigest
	d.Proto = b[0]
	d.Src = addrOf16([16]byte(b[1:17]))
	d.SrcPort = binary.BigEndian.Uint16(b[17:])
	d.Dst = addrOf16([16]byte(b[19:35]))
	d.DstPort = binary.BigEndian.Uint16(b[35:])
	d.Seq = binary.BigEndian.Uint32(b[37:])
	d.Len = binary.BigEndian.Uint32(b[41:])
	d.Flags = b[45]
	copy(d.Hash[:], b[46:62])
	if d.Flags&^flagsKept != 0 || (d.Proto != ProtoTCP && d.Flags != 0) {
		return d, fmt.Errorf("digest flags %#x", d.Flags)
	}
	if d.Proto != ProtoTCP && d.Seq != 0 {
		return d, errors.New("sequence number in a digest that is not TCP")
	}
	return d, nil
}

// addr16 is the 16-byte form of a (zero: all zeros).
func addr16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16()
}

func addrOf16(b [16]byte) netip.Addr {
	if b == ([16]byte{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom16(b).Unmap()
}

// Digest is the digest of the IP packet p (from its IP header on).
func Digest(p []byte) OutputDigest {
	if d, ok := tcpDigest(p); ok {
		return d
	}
	d := OutputDigest{Len: uint32(len(p))}
	proto, src, dst, l4, ok := ipHeader(p)
	if ok {
		d.Proto = proto
		if proto == ProtoUDP && len(l4) >= 8 {
			d.Src, d.Dst = src, dst
			d.SrcPort, d.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	}
	if d.Proto == ProtoTCP { // a TCP packet that does not parse: whole
		d.Proto = 0
	}
	h := sha256.Sum256(p)
	copy(d.Hash[:], h[:])
	return d
}

func tcpDigest(p []byte) (OutputDigest, bool) {
	proto, src, dst, l4, ok := ipHeader(p)
	if !ok || proto != ProtoTCP || len(l4) < 20 {
		return OutputDigest{}, false
	}
	off := int(l4[12]>>4) * 4
	if off < 20 || off > len(l4) {
		return OutputDigest{}, false
	}
	payload := l4[off:]
	d := OutputDigest{Proto: ProtoTCP, Src: src, Dst: dst,
		SrcPort: binary.BigEndian.Uint16(l4), DstPort: binary.BigEndian.Uint16(l4[2:]),
		Seq: binary.BigEndian.Uint32(l4[4:]), Len: uint32(len(payload)), Flags: l4[13] & flagsKept}
	h := sha256.Sum256(payload)
	copy(d.Hash[:], h[:])
	return d, true
}

// ipHeader parses an IPv4 or IPv6 header: the protocol, the addresses and
// the layer-4 bytes (cut at the packet's stated length). Fragments, IPv6
// extension headers and anything malformed are not ok.
func ipHeader(p []byte) (proto uint8, src, dst netip.Addr, l4 []byte, ok bool) {
	if len(p) < 1 {
		return
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:]))
		if ihl < 20 || total < ihl || total > len(p) {
			return
		}
		if frag := binary.BigEndian.Uint16(p[6:]); frag&0x3fff != 0 { // MF or an offset
			return
		}
		return p[9], netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), p[ihl:total], true
	case 6:
		if len(p) < 40 {
			return
		}
		plen := int(binary.BigEndian.Uint16(p[4:]))
		if 40+plen > len(p) {
			return
		}
		next := p[6]
		if next != ProtoTCP && next != ProtoUDP {
			return
		}
		return next, netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), p[40 : 40+plen], true
	}
	return
}
