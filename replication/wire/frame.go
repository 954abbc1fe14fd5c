// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package wire is the byte format of the peer protocol between the primary's
// and the backup's shim: length-prefixed frames with a fixed header, and the
// payload of each frame type. It does no I/O policy beyond reading and
// writing frames; sessions, heartbeats and storage live elsewhere.
package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Magic opens every frame: "RRCP". A reader that finds anything else is not
// talking to a peer shim (or has lost frame alignment) and must stop.
const Magic uint32 = 0x52524350

// Version is the protocol version this package speaks. A frame of any other
// version is refused: versions are negotiated in Hello before they differ.
// Version 3 added Goodbye: a version-2 primary never says it, so a version-3
// backup would take each of its deliberate stops for a failure. Version 4
// added the image digest to Hello.
const Version uint8 = 4

// HeaderSize is the size of the fixed frame header.
const HeaderSize = 40

// Limits. Chunks carry at most MaxChunkData bytes of file content so that a
// heartbeat never waits behind more than one chunk on the shared connection.
const (
	MaxChunkData      = 1 << 20
	MaxPathLen        = 4096
	MaxMessageLen     = 4096
	DefaultMaxPayload = MaxChunkData + MaxPathLen + 64
)

// Type is the frame type.
type Type uint8

const (
	TypeHello           Type = 1
	TypeHeartbeat       Type = 2
	TypeCheckpointBegin Type = 3
	TypeCheckpointChunk Type = 4
	TypeCheckpointEnd   Type = 5
	TypeCheckpointAbort Type = 6
	TypeAck             Type = 7
	TypeError           Type = 8
	// Reserved for hybrid mode: input-log records between checkpoints,
	// acknowledged individually (cumulatively by index).
	TypeLogRecord Type = 9
	TypeLogAck    Type = 10
	// TypeCheckpointCopy is the part of a delta checkpoint taken from its base.
	TypeCheckpointCopy Type = 11
	// TypeGoodbye is the primary's last frame before a deliberate stop: a
	// connection that ends without it ended by a failure.
	TypeGoodbye Type = 12
)

var typeNames = [...]string{
	TypeHello:           "Hello",
	TypeHeartbeat:       "Heartbeat",
	TypeCheckpointBegin: "CheckpointBegin",
	TypeCheckpointChunk: "CheckpointChunk",
	TypeCheckpointEnd:   "CheckpointEnd",
	TypeCheckpointAbort: "CheckpointAbort",
	TypeAck:             "Ack",
	TypeError:           "Error",
	TypeLogRecord:       "LogRecord",
	TypeLogAck:          "LogAck",
	TypeCheckpointCopy:  "CheckpointCopy",
	TypeGoodbye:         "Goodbye",
}

// Known reports whether t is a frame type of this protocol version.
func (t Type) Known() bool { return t >= TypeHello && t <= TypeGoodbye }

func (t Type) String() string {
	if t.Known() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// PairID identifies a replicated pair on the wire: the first 8 bytes of the
// SHA-256 of the pair name. Every frame carries it so that a frame of another
// pair (a mis-wired port, a future multiplexed connection) is refused.
type PairID uint64

// PairIDOf derives the PairID of a pair name.
func PairIDOf(pair string) PairID {
	sum := sha256.Sum256([]byte(pair))
	return PairID(binary.BigEndian.Uint64(sum[:8]))
}

func (p PairID) String() string { return fmt.Sprintf("%016x", uint64(p)) }

// Header is the fixed part of a frame. Layout (big endian):
//
//	0  magic   u32
//	4  version u8
//	5  type    u8
//	6  flags   u16 (none defined in version 1; must be zero)
//	8  pair    u64
//	16 epoch   u64
//	24 seq     u64
//	32 length  u32 payload length
//	36 crc     u32 CRC32C of bytes 0..35 and the payload
type Header struct {
	Type   Type
	Flags  uint16
	Pair   PairID
	Epoch  uint64
	Seq    uint64
	Length uint32
}

// Frame is a header with its payload.
type Frame struct {
	Header
	Payload []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendFrame appends the encoding of a frame to dst. h.Length is taken from
// payload.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, Magic)
	dst = append(dst, Version, byte(h.Type))
	dst = binary.BigEndian.AppendUint16(dst, h.Flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Pair))
	dst = binary.BigEndian.AppendUint64(dst, h.Epoch)
	dst = binary.BigEndian.AppendUint64(dst, h.Seq)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, dst[start:start+36])
	crc = crc32.Update(crc, castagnoli, payload)
	dst = binary.BigEndian.AppendUint32(dst, crc)
	return append(dst, payload...)
}

// decodeHeader checks the parts of a header that do not need the payload:
// magic, version, type, flags and the payload limit. It returns the CRC
// found in the header for the caller to check once the payload is read.
func decodeHeader(b []byte, maxPayload uint32) (Header, uint32, error) {
	if len(b) < HeaderSize {
		return Header{}, 0, fmt.Errorf("%w: header has %d of %d bytes", ErrTruncated, len(b), HeaderSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != Magic {
		return Header{}, 0, fmt.Errorf("%w: %#08x", ErrBadMagic, m)
	}
	if v := b[4]; v != Version {
		return Header{}, 0, fmt.Errorf("%w: %d (this side speaks %d)", ErrBadVersion, v, Version)
	}
	h := Header{
		Type:   Type(b[5]),
		Flags:  binary.BigEndian.Uint16(b[6:8]),
		Pair:   PairID(binary.BigEndian.Uint64(b[8:16])),
		Epoch:  binary.BigEndian.Uint64(b[16:24]),
		Seq:    binary.BigEndian.Uint64(b[24:32]),
		Length: binary.BigEndian.Uint32(b[32:36]),
	}
	if !h.Type.Known() {
		return Header{}, 0, fmt.Errorf("%w: %d", ErrUnknownType, uint8(h.Type))
	}
	if h.Flags != 0 {
		return Header{}, 0, fmt.Errorf("%w: %#04x on %s", ErrBadFlags, h.Flags, h.Type)
	}
	if h.Length > maxPayload {
		return Header{}, 0, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrPayloadTooLarge, h.Type, h.Length, maxPayload)
	}
	return h, binary.BigEndian.Uint32(b[36:40]), nil
}

func checksum(header, payload []byte) uint32 {
	crc := crc32.Update(0, castagnoli, header[:36])
	return crc32.Update(crc, castagnoli, payload)
}
