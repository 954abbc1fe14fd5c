// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// attr encodes one netlink attribute, padded.
func attr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(nlattrHdr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32be(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func pktHdr(id uint32, proto uint16, hook uint8) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	b = binary.BigEndian.AppendUint16(b, proto)
	return append(b, hook)
}

// nlmsg wraps an nfgenmsg body and attributes into a netlink message.
func nlmsg(typ uint16, attrs ...[]byte) []byte {
	m := newMsg(nil, typ, 0, 0, 7)
	for _, a := range attrs {
		m.b = append(m.b, a...)
	}
	return m.done()
}

// encodePacketMsg is the kernel's side, for tests: a packet message for p.
func encodePacketMsg(p Packet) []byte {
	attrs := [][]byte{attr(nfqaPacketHdr, pktHdr(p.ID, p.HWProtocol, p.Hook))}
	if p.HasMark {
		attrs = append(attrs, attr(nfqaMark, u32be(p.Mark)))
	}
	if !p.Timestamp.IsZero() {
		ts := binary.BigEndian.AppendUint64(nil, uint64(p.Timestamp.Unix()))
		ts = binary.BigEndian.AppendUint64(ts, uint64(p.Timestamp.Nanosecond()/1000))
		attrs = append(attrs, attr(nfqaTimestamp, ts))
	}
	if p.InDev != 0 {
		attrs = append(attrs, attr(nfqaIfindexIndev, u32be(p.InDev)))
	}
	if p.OutDev != 0 {
		attrs = append(attrs, attr(nfqaIfindexOutdev, u32be(p.OutDev)))
	}
	if p.SkbInfo != 0 {
		attrs = append(attrs, attr(nfqaSkbInfo, u32be(p.SkbInfo)))
	}
	if p.CapLen != uint32(len(p.Payload)) {
		attrs = append(attrs, attr(nfqaCapLen, u32be(p.CapLen)))
	}
	if p.Payload != nil {
		attrs = append(attrs, attr(nfqaPayload, p.Payload))
	}
	return nlmsg(msgType(nfqnlMsgPacket), attrs...)
}

func errMsg(errno int32, seq uint32) []byte {
	m := newMsg(nil, unix.NLMSG_ERROR, 0, seq, 0)
	m.b = m.b[:nlmsgHdrLen] // no nfgenmsg in an error
	m.b = binary.NativeEndian.AppendUint32(m.b, uint32(errno))
	orig := newMsg(nil, msgType(nfqnlMsgVerdictBatch), 0, seq, 0)
	m.b = append(m.b, orig.b[:nlmsgHdrLen]...)
	return m.done()
}

func TestDecodePacket(t *testing.T) {
	hdr := attr(nfqaPacketHdr, pktHdr(42, 0x0800, 3))
	payload := attr(nfqaPayload, []byte{0x45, 0, 0, 20, 1})
	tests := []struct {
		name    string
		msg     []byte
		wantErr string
		check   func(*testing.T, Packet)
	}{
		{"minimal", nlmsg(msgType(0), hdr), "", func(t *testing.T, p Packet) {
			if p.ID != 42 || p.HWProtocol != 0x0800 || p.Hook != 3 || p.Payload != nil || p.Len() != 0 {
				t.Errorf("got %+v", p)
			}
		}},
		{"full", nlmsg(msgType(0), hdr, attr(nfqaMark, u32be(9)), attr(nfqaIfindexOutdev, u32be(4)),
			attr(nfqaTimestamp, append(binary.BigEndian.AppendUint64(nil, 1700000000), binary.BigEndian.AppendUint64(nil, 250)...)),
			attr(nfqaSkbInfo, u32be(SkbInfoGSO)), attr(nfqaCapLen, u32be(1500)), attr(nfqaHWAddr, make([]byte, 12)), payload), "",
			func(t *testing.T, p Packet) {
				if !p.HasMark || p.Mark != 9 || p.OutDev != 4 || p.SkbInfo != SkbInfoGSO || p.Len() != 1500 || len(p.Payload) != 5 ||
					!p.Timestamp.Equal(time.Unix(1700000000, 250000)) {
					t.Errorf("got %+v", p)
				}
			}},
		{"unknown attribute skipped", nlmsg(msgType(0), attr(30, []byte{1, 2, 3}), hdr), "", nil},
		{"nested and byte-order flags masked", nlmsg(msgType(0), attr(nfqaPacketHdr|unix.NLA_F_NET_BYTEORDER, pktHdr(1, 0, 0))), "", nil},
		{"last attribute unpadded", nlmsg(msgType(0), hdr, attr(nfqaPayload, []byte{1}))[:len(nlmsg(msgType(0), hdr, attr(nfqaPayload, []byte{1})))-3], "", nil},
		{"no packet header", nlmsg(msgType(0), payload), "without NFQA_PACKET_HDR", nil},
		{"short packet header", nlmsg(msgType(0), attr(nfqaPacketHdr, pktHdr(1, 0, 0)[:6])), "has 6 bytes, want 7", nil},
		{"long packet header", nlmsg(msgType(0), attr(nfqaPacketHdr, append(pktHdr(1, 0, 0), 0))), "has 8 bytes, want 7", nil},
		{"short mark", nlmsg(msgType(0), hdr, attr(nfqaMark, []byte{1, 2})), "attribute type 3 has 2 bytes", nil},
		{"bad timestamp size", nlmsg(msgType(0), hdr, attr(nfqaTimestamp, make([]byte, 8))), "want 16", nil},
		{"timestamp usec out of range", nlmsg(msgType(0), hdr, attr(nfqaTimestamp, append(make([]byte, 8), binary.BigEndian.AppendUint64(nil, 1e6)...))), "out of range", nil},
		{"repeated header", nlmsg(msgType(0), hdr, hdr), "repeated", nil},
		{"cap len below payload", nlmsg(msgType(0), hdr, attr(nfqaCapLen, u32be(2)), payload), "less than the 5 payload bytes", nil},
		{"attribute length below header", append(nlmsg(msgType(0), hdr), 2, 0, 1, 0), "less than its header", nil},
		{"attribute overruns message", append(nlmsg(msgType(0), hdr), 200, 0, 10, 0, 1, 2, 3, 4), "truncated", nil},
		{"truncated attribute header", append(nlmsg(msgType(0), hdr), 8, 0), "truncated attribute header", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fixLen(tt.msg) // raw bytes were appended to some
			var got []Packet
			err := decodeDatagram(msg, func(p Packet) { got = append(got, p) })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != 1 {
				t.Fatalf("err = %v, %d packets", err, len(got))
			}
			if tt.check != nil {
				tt.check(t, got[0])
			}
		})
	}
}

// fixLen sets the length of the (single) message in b to len(b).
func fixLen(b []byte) []byte {
	b = append([]byte(nil), b...)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

func TestDecodeDatagram(t *testing.T) {
	p1 := encodePacketMsg(Packet{ID: 1, Payload: []byte{1, 2, 3}, CapLen: 3})
	p2 := encodePacketMsg(Packet{ID: 2, Payload: []byte{4}, CapLen: 1})
	cat := func(ms ...[]byte) []byte {
		var b []byte
		for _, m := range ms {
			b = append(b, m...)
		}
		return b
	}
	tests := []struct {
		name    string
		dgram   []byte
		ids     []uint32
		wantErr string
		errno   unix.Errno
	}{
		{"two packets", cat(p1, p2), []uint32{1, 2}, "", 0},
		{"ack skipped", cat(errMsg(0, 5), p1), []uint32{1}, "", 0},
		{"rejected verdict after packets", cat(p1, errMsg(-int32(unix.ENOENT), 0), p2), []uint32{1, 2}, "kernel rejected", unix.ENOENT},
		{"truncated header", p1[:10], nil, "truncated message header", 0},
		{"length beyond datagram", p1[:len(p1)-4], nil, "truncated", 0},
		{"length below header", []byte{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, "less than its header", 0},
		{"foreign message type", nlmsg(0x0100, attr(1, nil)), nil, "unexpected message type", 0},
		{"short error", fixLen(errMsg(-1, 0)[:20]), nil, "error message of 4 bytes, need 20", 0},
		{"no nfgenmsg", fixLen(nlmsg(msgType(0))[:nlmsgHdrLen]), nil, "no nfgenmsg", 0},
		{"bad version", func() []byte { m := encodePacketMsg(Packet{ID: 1}); m[nlmsgHdrLen+1] = 1; return m }(), nil, "version 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ids []uint32
			err := decodeDatagram(tt.dgram, func(p Packet) { ids = append(ids, p.ID) })
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.errno != 0 && !errors.Is(err, tt.errno) {
				t.Fatalf("err = %v, want errno %v", err, tt.errno)
			}
			if tt.ids != nil && !slices.Equal(ids, tt.ids) {
				t.Fatalf("ids = %v, want %v", ids, tt.ids)
			}
		})
	}
}

// attrsOf decodes the attributes of a message we encoded.
func attrsOf(t *testing.T, msg []byte) (typ, flags uint16, queue uint16, attrs map[uint16][]byte) {
	t.Helper()
	attrs = map[uint16][]byte{}
	err := splitMessages(msg, func(m message) error {
		typ, flags = m.typ, m.flags
		queue = binary.BigEndian.Uint16(m.body[2:4])
		b := m.body[nfgenLen:]
		for len(b) > 0 {
			n := int(binary.NativeEndian.Uint16(b))
			attrs[binary.NativeEndian.Uint16(b[2:])] = b[4:n]
			b = b[min(align4(n), len(b)):]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestEncodeConfig(t *testing.T) {
	for _, gso := range []bool{false, true} {
		msg := encodeConfig(nil, 9, 513, queueConfig{copyRange: 256, maxLen: 65536, gso: gso})
		typ, flags, queue, a := attrsOf(t, msg)
		if typ != unix.NFNL_SUBSYS_QUEUE<<8|nfqnlMsgConfig || flags&unix.NLM_F_ACK == 0 || queue != 513 {
			t.Fatalf("type %#x flags %#x queue %d", typ, flags, queue)
		}
		if a[nfqaCfgCmd][0] != nfqnlCfgCmdBind {
			t.Errorf("cmd %v", a[nfqaCfgCmd])
		}
		if p := a[nfqaCfgParams]; len(p) != 5 || binary.BigEndian.Uint32(p) != 256 || p[4] != nfqnlCopyPacket {
			t.Errorf("params %v", p)
		}
		if binary.BigEndian.Uint32(a[nfqaCfgQueueMaxlen]) != 65536 {
			t.Errorf("maxlen %v", a[nfqaCfgQueueMaxlen])
		}
		mask, fl := binary.BigEndian.Uint32(a[nfqaCfgMask]), binary.BigEndian.Uint32(a[nfqaCfgFlags])
		if mask&nfqaCfgFFailOpen == 0 || fl&nfqaCfgFFailOpen != 0 {
			t.Errorf("fail-open must be explicitly cleared: mask %#x flags %#x", mask, fl)
		}
		if (fl&nfqaCfgFGSO != 0) != gso {
			t.Errorf("gso %v: flags %#x", gso, fl)
		}
	}
}

func TestEncodeVerdict(t *testing.T) {
	tests := []struct {
		batch   bool
		v       Verdict
		id      uint32
		wantTyp uint16
	}{
		{false, Accept, 7, nfqnlMsgVerdict},
		{true, Accept, 0xfffffffe, nfqnlMsgVerdictBatch},
		{true, Drop, 1, nfqnlMsgVerdictBatch},
	}
	for _, tt := range tests {
		typ, flags, queue, a := attrsOf(t, encodeVerdict(nil, 3, tt.id, tt.v, tt.batch))
		h := a[nfqaVerdictHdr]
		if typ != msgType(tt.wantTyp) || flags&unix.NLM_F_ACK != 0 || queue != 3 || len(h) != 8 ||
			Verdict(binary.BigEndian.Uint32(h)) != tt.v || binary.BigEndian.Uint32(h[4:]) != tt.id {
			t.Errorf("%+v: type %#x flags %#x queue %d hdr %v", tt, typ, flags, queue, h)
		}
	}
}

// FuzzDecodeDatagram: the decoder never panics, never returns a payload
// outside the input, and what it accepts re-encodes to the same packet.
func FuzzDecodeDatagram(f *testing.F) {
	f.Add(encodePacketMsg(Packet{ID: 1, HWProtocol: 0x800, Hook: 3, Payload: []byte{0x45, 0, 0, 40}, CapLen: 1500, HasMark: true, Mark: 2}))
	f.Add(append(encodePacketMsg(Packet{ID: 2, Timestamp: time.Unix(5, 6000)}), errMsg(-2, 0)...))
	f.Add(errMsg(0, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []Packet
		err := decodeDatagram(b, func(p Packet) { got = append(got, p) })
		var nlErr *NetlinkError
		if err != nil && !errors.As(err, &nlErr) {
			return
		}
		for _, p := range got {
			if p.Len() < len(p.Payload) {
				t.Fatalf("Len %d < payload %d", p.Len(), len(p.Payload))
			}
			var again []Packet
			if err := decodeDatagram(encodePacketMsg(p), func(q Packet) { again = append(again, q) }); err != nil || len(again) != 1 {
				t.Fatalf("re-decode of %+v: %v", p, err)
			}
			q := again[0]
			if q.ID != p.ID || q.HWProtocol != p.HWProtocol || q.Hook != p.Hook || q.Mark != p.Mark || q.HasMark != p.HasMark ||
				q.CapLen != p.CapLen || string(q.Payload) != string(p.Payload) || !q.Timestamp.Equal(p.Timestamp) ||
				q.InDev != p.InDev || q.OutDev != p.OutDev || q.SkbInfo != p.SkbInfo {
				t.Fatalf("round trip: %+v != %+v", q, p)
			}
		}
	})
}
