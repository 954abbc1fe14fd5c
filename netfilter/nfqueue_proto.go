// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

// Wire format of nfnetlink_queue (include/uapi/linux/netfilter/nfnetlink_queue.h).
// golang.org/x/sys/unix has the netlink and nfnetlink basics but not the queue
// subsystem, so its constants and structures are spelled out here.

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Message types of the queue subsystem (enum nfqnl_msg_types).
const (
	nfqnlMsgPacket       = 0 // packet, kernel to user space
	nfqnlMsgVerdict      = 1 // verdict on one packet
	nfqnlMsgConfig       = 2 // bind and configure a queue
	nfqnlMsgVerdictBatch = 3 // verdict on every packet with id <= the given one
)

// Packet attributes (enum nfqnl_attr_type).
const (
	nfqaPacketHdr     = 1  // struct nfqnl_msg_packet_hdr
	nfqaVerdictHdr    = 2  // struct nfqnl_msg_verdict_hdr
	nfqaMark          = 3  // be32
	nfqaTimestamp     = 4  // struct nfqnl_msg_packet_timestamp
	nfqaIfindexIndev  = 5  // be32
	nfqaIfindexOutdev = 6  // be32
	nfqaHWAddr        = 9  // struct nfqnl_msg_packet_hw
	nfqaPayload       = 10 // the packet, from the network header on
	nfqaCapLen        = 13 // be32 length of the packet when the payload is cut
	nfqaSkbInfo       = 14 // be32 NFQA_SKB_* flags
	nfqaUID           = 16 // be32
	nfqaGID           = 17 // be32
	nfqaPriority      = 21 // be32
)

// Fixed attribute sizes the decoder insists on.
const (
	packetHdrLen = 7 // be32 id, be16 hw protocol, u8 hook; packed
	timestampLen = 16
	hwAddrLen    = 12
)

// Configuration attributes (enum nfqnl_attr_config) and commands.
const (
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxlen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5

	nfqnlCfgCmdBind = 1

	nfqnlCopyPacket = 2
)

// Queue flags (NFQA_CFG_F_*). FAIL_OPEN is named only so that the code can
// say, and a test can check, that it is never set: a full queue must drop.
const (
	nfqaCfgFFailOpen = 1 << 0
	nfqaCfgFGSO      = 1 << 2
)

// NFQA_SKB_* bits of NFQA_SKB_INFO.
const (
	SkbInfoCsumNotReady = 1 << 0 // checksum not yet computed (offloaded)
	SkbInfoGSO          = 1 << 1 // a GSO super-packet, queued whole
)

// Verdict is a netfilter verdict on a queued packet.
type Verdict uint32

// Verdicts. Only these two are used: a packet is accepted (released) or
// dropped; NF_REPEAT and NF_QUEUE would let a packet bypass the gate.
const (
	Drop   Verdict = 0 // NF_DROP
	Accept Verdict = 1 // NF_ACCEPT
)

const (
	nlmsgHdrLen = unix.SizeofNlMsghdr // 16
	nfgenLen    = 4                   // struct nfgenmsg
	nlattrHdr   = 4
	nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

func align4(n int) int { return (n + 3) &^ 3 }

// msgType is the nlmsg_type of a queue-subsystem message.
func msgType(m uint16) uint16 { return unix.NFNL_SUBSYS_QUEUE<<8 | m }

// msgBuilder appends one netlink message with an nfgenmsg header and
// attributes; it fixes the length when done.
type msgBuilder struct{ b []byte }

func newMsg(buf []byte, typ, flags uint16, seq uint32, queue uint16) msgBuilder {
	b := buf[:0]
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set by done
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, queue) // res_id: the queue number
	return msgBuilder{b}
}

func (m *msgBuilder) attr(typ uint16, data []byte) {
	m.b = binary.NativeEndian.AppendUint16(m.b, uint16(nlattrHdr+len(data)))
	m.b = binary.NativeEndian.AppendUint16(m.b, typ)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *msgBuilder) done() []byte {
	binary.NativeEndian.PutUint32(m.b[0:4], uint32(len(m.b)))
	return m.b
}

// encodeConfig is the one message that binds queue num to this socket and
// configures it: copy mode, queue length and flags. FAIL_OPEN is in the mask
// with value 0, so it is explicitly cleared even if a previous owner set it.
func encodeConfig(buf []byte, seq uint32, num uint16, cfg queueConfig) []byte {
	m := newMsg(buf, msgType(nfqnlMsgConfig), unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, num)
	m.attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0}) // command, pad, pf (unused since 3.8)
	params := binary.BigEndian.AppendUint32(nil, cfg.copyRange)
	params = append(params, nfqnlCopyPacket)
	m.attr(nfqaCfgParams, params)
	m.attr(nfqaCfgQueueMaxlen, binary.BigEndian.AppendUint32(nil, cfg.maxLen))
	var flags uint32
	if cfg.gso {
		flags |= nfqaCfgFGSO
	}
	m.attr(nfqaCfgMask, binary.BigEndian.AppendUint32(nil, nfqaCfgFFailOpen|nfqaCfgFGSO))
	m.attr(nfqaCfgFlags, binary.BigEndian.AppendUint32(nil, flags))
	return m.done()
}

// encodeVerdict is a verdict on packet id alone (NFQNL_MSG_VERDICT), or, with
// batch, on every packet queued with an id up to and including id
// (NFQNL_MSG_VERDICT_BATCH; the kernel compares ids modulo 2^32). No ack is
// requested: the kernel reports a failed verdict with an NLMSG_ERROR anyway,
// which the reader surfaces as a *NetlinkError.
func encodeVerdict(buf []byte, num uint16, id uint32, v Verdict, batch bool) []byte {
	return encodeVerdictPayload(buf, num, id, v, batch, nil)
}

// encodeVerdictPayload is encodeVerdict with the packet's new content (from
// its IP header on), which the kernel puts in its place before the verdict
// (NFQA_PAYLOAD); nil leaves the packet as it is.
func encodeVerdictPayload(buf []byte, num uint16, id uint32, v Verdict, batch bool, payload []byte) []byte {
	typ := uint16(nfqnlMsgVerdict)
	if batch {
		typ = nfqnlMsgVerdictBatch
	}
	m := newMsg(buf, msgType(typ), unix.NLM_F_REQUEST, 0, num)
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(v))
	binary.BigEndian.PutUint32(hdr[4:8], id)
	m.attr(nfqaVerdictHdr, hdr[:])
	if payload != nil {
		m.attr(nfqaPayload, payload)
	}
	return m.done()
}

// NetlinkError is an NLMSG_ERROR the kernel sent: a rejected configuration
// or verdict (e.g. ENOENT for a verdict on an unknown packet id).
type NetlinkError struct {
	Errno unix.Errno
	Seq   uint32 // sequence number of the rejected request (0 for verdicts)
	Type  uint16 // nlmsg_type of the rejected request
}

func (e *NetlinkError) Error() string {
	return fmt.Sprintf("netlink: kernel rejected request type %#x seq %d: %v", e.Type, e.Seq, e.Errno)
}

func (e *NetlinkError) Unwrap() error { return e.Errno }

// message is one netlink message found in a datagram.
type message struct {
	typ   uint16
	flags uint16
	seq   uint32
	body  []byte // after the nlmsghdr
}

// splitMessages cuts a datagram into netlink messages, strictly: every
// message must have a complete header, a length within the datagram, and be
// followed only by padding or further messages.
func splitMessages(b []byte, fn func(message) error) error {
	for off := 0; off < len(b); {
		rest := len(b) - off
		if rest < nlmsgHdrLen {
			return fmt.Errorf("netlink: truncated message header at offset %d: %d bytes left, need %d", off, rest, nlmsgHdrLen)
		}
		n := int(binary.NativeEndian.Uint32(b[off:]))
		if n < nlmsgHdrLen {
			return fmt.Errorf("netlink: message at offset %d has length %d, less than its header", off, n)
		}
		if n > rest {
			return fmt.Errorf("netlink: message at offset %d has length %d but only %d bytes are left (truncated)", off, n, rest)
		}
		m := message{
			typ:   binary.NativeEndian.Uint16(b[off+4:]),
			flags: binary.NativeEndian.Uint16(b[off+6:]),
			seq:   binary.NativeEndian.Uint32(b[off+8:]),
			body:  b[off+nlmsgHdrLen : off+n],
		}
		if err := fn(m); err != nil {
			return err
		}
		next := off + align4(n)
		if next > len(b) { // the last message may omit its padding
			next = len(b)
		}
		off = next
	}
	return nil
}

// decodeError decodes the body of an NLMSG_ERROR: errno 0 is an ack.
func decodeError(body []byte) (*NetlinkError, error) {
	if len(body) < 4+nlmsgHdrLen {
		return nil, fmt.Errorf("netlink: error message of %d bytes, need %d", len(body), 4+nlmsgHdrLen)
	}
	errno := int32(binary.NativeEndian.Uint32(body))
	if errno > 0 {
		return nil, fmt.Errorf("netlink: error message with positive errno %d", errno)
	}
	return &NetlinkError{
		Errno: unix.Errno(-errno),
		Type:  binary.NativeEndian.Uint16(body[8:]),
		Seq:   binary.NativeEndian.Uint32(body[12:]),
	}, nil
}
