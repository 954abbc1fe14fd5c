// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Packet is one queued packet as the kernel reported it. Payload starts at
// the network (IP) header and is cut at the queue's copy range; it aliases
// the queue's read buffer and is valid only until the next ReadBatch.
type Packet struct {
	ID         uint32    // the kernel's id, increasing (mod 2^32) in queue order
	HWProtocol uint16    // EtherType, e.g. 0x0800 IPv4, 0x86dd IPv6
	Hook       uint8     // netfilter hook (1 LOCAL_IN, 3 LOCAL_OUT, ...)
	Mark       uint32    // skb mark, if HasMark
	HasMark    bool      //
	Timestamp  time.Time // kernel receive time, when the skb has one (zero otherwise)
	InDev      uint32    // input interface index, 0 if none
	OutDev     uint32    // output interface index, 0 if none
	SkbInfo    uint32    // SkbInfo* flags
	CapLen     uint32    // length of the whole packet (NFQA_CAP_LEN, or len(Payload) if not cut)
	Payload    []byte    // the packet from the IP header on, at most the copy range
}

// Len is the length of the packet on the wire (not of the copied part).
func (p *Packet) Len() int { return int(p.CapLen) }

// decodePacket decodes the body (after the nlmsghdr) of an NFQNL_MSG_PACKET.
// It is strict: attributes must be complete, fixed-size ones exactly sized,
// and none of the known ones repeated; the packet header is mandatory.
// Unknown attributes are skipped, as newer kernels add some.
func decodePacket(body []byte) (Packet, error) {
	var p Packet
	if len(body) < nfgenLen {
		return p, fmt.Errorf("nfqueue: packet message of %d bytes has no nfgenmsg header", len(body))
	}
	if v := body[1]; v != unix.NFNETLINK_V0 {
		return p, fmt.Errorf("nfqueue: packet message has nfnetlink version %d, want %d", v, unix.NFNETLINK_V0)
	}
	var seen uint32 // bit per known attribute type (all < 32)
	hasHdr, hasCapLen := false, false
	b := body[nfgenLen:]
	for off := 0; off < len(b); {
		rest := len(b) - off
		if rest < nlattrHdr {
			return p, fmt.Errorf("nfqueue: truncated attribute header at offset %d: %d bytes left", off, rest)
		}
		n := int(binary.NativeEndian.Uint16(b[off:]))
		typ := binary.NativeEndian.Uint16(b[off+2:]) & nlaTypeMask
		if n < nlattrHdr {
			return p, fmt.Errorf("nfqueue: attribute type %d at offset %d has length %d, less than its header", typ, off, n)
		}
		if n > rest {
			return p, fmt.Errorf("nfqueue: attribute type %d at offset %d has length %d but only %d bytes are left (truncated)", typ, off, n, rest)
		}
		data := b[off+nlattrHdr : off+n]
		if typ < 32 {
			if seen&(1<<typ) != 0 {
				return p, fmt.Errorf("nfqueue: attribute type %d repeated", typ)
			}
			seen |= 1 << typ
		}
		var err error
		switch typ {
		case nfqaPacketHdr:
			if err = wantLen(typ, data, packetHdrLen); err == nil {
				p.ID = binary.BigEndian.Uint32(data[0:4])
				p.HWProtocol = binary.BigEndian.Uint16(data[4:6])
				p.Hook = data[6]
				hasHdr = true
			}
		case nfqaMark:
			if p.Mark, err = be32(typ, data); err == nil {
				p.HasMark = true
			}
		case nfqaTimestamp:
			if err = wantLen(typ, data, timestampLen); err == nil {
				sec := binary.BigEndian.Uint64(data[0:8])
				usec := binary.BigEndian.Uint64(data[8:16])
				if sec > 1<<40 || usec >= 1e6 {
					err = fmt.Errorf("nfqueue: timestamp %d.%06d out of range", sec, usec)
				} else {
					p.Timestamp = time.Unix(int64(sec), int64(usec)*1000)
				}
			}
		case nfqaIfindexIndev:
			p.InDev, err = be32(typ, data)
		case nfqaIfindexOutdev:
			p.OutDev, err = be32(typ, data)
		case nfqaHWAddr:
			err = wantLen(typ, data, hwAddrLen)
		case nfqaPayload:
			p.Payload = data
		case nfqaCapLen:
			p.CapLen, err = be32(typ, data)
			hasCapLen = true
		case nfqaSkbInfo:
			p.SkbInfo, err = be32(typ, data)
		case nfqaUID, nfqaGID, nfqaPriority:
			_, err = be32(typ, data)
		}
		if err != nil {
			return p, err
		}
		next := off + align4(n)
		if next > len(b) { // the last attribute may omit its padding
			next = len(b)
		}
		off = next
	}
	if !hasHdr {
		return p, fmt.Errorf("nfqueue: packet message without NFQA_PACKET_HDR")
	}
	if !hasCapLen {
		p.CapLen = uint32(len(p.Payload))
	} else if p.CapLen < uint32(len(p.Payload)) {
		return p, fmt.Errorf("nfqueue: NFQA_CAP_LEN %d is less than the %d payload bytes", p.CapLen, len(p.Payload))
	}
	return p, nil
}

func wantLen(typ uint16, data []byte, n int) error {
	if len(data) != n {
		return fmt.Errorf("nfqueue: attribute type %d has %d bytes, want %d", typ, len(data), n)
	}
	return nil
}

func be32(typ uint16, data []byte) (uint32, error) {
	if err := wantLen(typ, data, 4); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(data), nil
}

// decodeDatagram decodes every message of one datagram read from a queue
// socket: packets go to fn; an NLMSG_ERROR that is not an ack is returned
// as a *NetlinkError after the packets before it; anything else (a message
// of another subsystem, an unexpected type) is an error.
func decodeDatagram(b []byte, fn func(Packet)) error {
	var nlErr error
	err := splitMessages(b, func(m message) error {
		switch {
		case m.typ == unix.NLMSG_ERROR:
			e, err := decodeError(m.body)
			if err != nil {
				return err
			}
			if e.Errno != 0 && nlErr == nil {
				nlErr = e
			}
			return nil
		case m.typ == unix.NLMSG_NOOP || m.typ == unix.NLMSG_DONE:
			return nil
		case m.typ == msgType(nfqnlMsgPacket):
			p, err := decodePacket(m.body)
			if err != nil {
				return err
			}
			fn(p)
			return nil
		default:
			return fmt.Errorf("nfqueue: unexpected message type %#x", m.typ)
		}
	})
	if err != nil {
		return err
	}
	return nlErr
}
