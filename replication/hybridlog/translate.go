// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import "encoding/binary"

// Translation carries a connection that a replay accepted again over to
// the primary's numbering: the replay drew a new initial sequence number,
// and a new TCP timestamp offset, for it.
type Translation struct {
	// Seq is added to the sequence numbers the container sends and
	// subtracted from its client's acknowledgements and SACK blocks.
	Seq uint32
	// TS, if HasTS, is added to the container's timestamps (TSval) and
	// subtracted from the echoes of them its client sends (TSecr).
	TS    uint32
	HasTS bool
}

// Translator holds the translations by connection, as the container sees
// it. It is not changed once in use, so both directions may read it at once.
type Translator map[FlowKey]Translation

// Outbound translates, in place, a whole IPv4 TCP packet the container
// sends; it reports whether the packet is one of a translated connection.
func (t Translator) Outbound(p []byte) bool {
	s, ok := ParseSegment(p)
	if !ok || p[0]>>4 != 4 {
		return false
	}
	tr, ok := t[s.Flow]
	if !ok {
		return false
	}
	l4 := p[int(p[0]&0x0f)*4:]
	binary.BigEndian.PutUint32(l4[4:], s.Seq+tr.Seq)
	if tr.HasTS {
		tcpOptions(l4, func(kind byte, data []byte) {
			if kind == optTimestamp && len(data) == 8 {
				binary.BigEndian.PutUint32(data, binary.BigEndian.Uint32(data)+tr.TS)
			}
		})
	}
	setTCPChecksum(p)
	return true
}

// Inbound translates, in place, a whole IPv4 TCP packet the container's
// client sends; it reports whether the packet is one of a translated
// connection.
func (t Translator) Inbound(p []byte) bool {
	s, ok := ParseSegment(p)
	if !ok || p[0]>>4 != 4 {
		return false
	}
	tr, ok := t[s.Flow.Reverse()]
	if !ok {
		return false
	}
	l4 := p[int(p[0]&0x0f)*4:]
	if s.Flags&FlagACK != 0 {
		binary.BigEndian.PutUint32(l4[8:], s.Ack-tr.Seq)
	}
	tcpOptions(l4, func(kind byte, data []byte) {
		switch {
		case kind == optSACK:
			for i := 0; i+4 <= len(data); i += 4 {
				binary.BigEndian.PutUint32(data[i:], binary.BigEndian.Uint32(data[i:])-tr.Seq)
			}
		case kind == optTimestamp && len(data) == 8 && tr.HasTS && s.Flags&FlagACK != 0:
			binary.BigEndian.PutUint32(data[4:], binary.BigEndian.Uint32(data[4:])-tr.TS)
		}
	})
	setTCPChecksum(p)
	return true
}

// TCP options a translation changes.
const (
	optSACK      = 5
	optTimestamp = 8
)

// Timestamps returns the TCP timestamp option of a whole TCP packet.
func Timestamps(p []byte) (val, ecr uint32, ok bool) {
	_, _, _, l4, isIP := ipHeader(p)
	if !isIP || len(l4) < 20 {
		return 0, 0, false
	}
	tcpOptions(l4, func(kind byte, data []byte) {
		if kind == optTimestamp && len(data) == 8 {
			val, ecr, ok = binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:]), true
		}
	})
	return val, ecr, ok
}

// tcpOptions calls fn with each option of the TCP header at the start of l4
// (its data aliases the packet), stopping at the end-of-list option or at
// one that does not fit.
func tcpOptions(l4 []byte, fn func(kind byte, data []byte)) {
	off := int(l4[12]>>4) * 4
	if off < 20 || off > len(l4) {
		return
	}
	opts := l4[20:off]
	for len(opts) > 0 {
		switch opts[0] {
		case 0:
			return
		case 1:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			return
		}
		fn(opts[0], opts[2:opts[1]])
		opts = opts[opts[1]:]
	}
}
