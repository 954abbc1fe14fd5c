// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package hybridlog is the log of hybrid replication: one total order of
// what entered the replicated container (input packets, whole) and what
// left it (a digest of each output packet), as the container saw it. The
// primary appends to a Log and streams its batches to the backup; an output
// packet may leave once the backup has acknowledged the log up to its own
// record. The backup keeps the records in a Store from its last committed
// checkpoint on, for the replay at failover.
//
// A log position is (epoch, index): the checkpoint epoch the records
// follow, and the record's number after that checkpoint, from 1.
package hybridlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Kind says what a record is.
type Kind uint8

const (
	// KindInput is a packet that entered the container's network namespace.
	KindInput Kind = 1
	// KindOutput is the digest of a packet the container sent.
	KindOutput Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindInput:
		return "input"
	case KindOutput:
		return "output"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Record is one entry of the log.
type Record struct {
	Kind Kind
	At   time.Time // when the primary saw the packet (wall clock, ns)
	// Packet is an input packet from its IP header on (KindInput).
	Packet []byte
	// Digest describes an output packet (KindOutput).
	Digest OutputDigest
}

// Limits of the encoding.
const (
	// MaxPacket bounds an input packet: an IP packet with its headers, or
	// a GRO aggregate of several, as one frame of the peer protocol holds it.
	MaxPacket = MaxBatchBytes - 2 - recordHeader - 4
	// MaxBatch bounds the records of one batch.
	MaxBatch = 4096
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("hybridlog: malformed batch")

// Fixed sizes of the encoding: kind u8, at u64, then the body.
const (
	recordHeader = 1 + 8
	digestSize   = 1 + 16 + 2 + 16 + 2 + 4 + 4 + 1 + 16
)

// AppendBatch appends the encoding of recs: u16 count, then each record.
// It panics on more than MaxBatch records or an oversized packet: the Log
// never makes either.
func AppendBatch(dst []byte, recs []Record) []byte {
	if len(recs) > MaxBatch {
		panic(fmt.Sprintf("hybridlog: batch of %d records exceeds %d", len(recs), MaxBatch))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(recs)))
	for _, r := range recs {
		dst = append(dst, byte(r.Kind))
		dst = binary.BigEndian.AppendUint64(dst, uint64(r.At.UnixNano()))
		switch r.Kind {
		case KindInput:
			if len(r.Packet) > MaxPacket {
				panic(fmt.Sprintf("hybridlog: packet of %d bytes exceeds %d", len(r.Packet), MaxPacket))
			}
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.Packet)))
			dst = append(dst, r.Packet...)
		case KindOutput:
			dst = r.Digest.append(dst)
		default:
			panic(fmt.Sprintf("hybridlog: record of %s", r.Kind))
		}
	}
	return dst
}

// DecodeBatch decodes a batch. It is strict: every record complete, no
// trailing bytes, no unknown kind, so that a batch has one encoding. The
// packets alias b.
func DecodeBatch(b []byte) ([]Record, error) {
	var recs []Record
	if _, err := walkBatch(b, func(r Record) { recs = append(recs, r) }); err != nil {
		return nil, err
	}
	return recs, nil
}

// CheckBatch checks a batch as strictly as DecodeBatch and counts its
// records, without keeping them: what a backup does with each batch it
// stores (it decodes them only to replay).
func CheckBatch(b []byte) (int, error) { return walkBatch(b, nil) }

// walkBatch decodes b and hands each record to fn (if set); it returns the
// count.
func walkBatch(b []byte, fn func(Record)) (int, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("%w: %d bytes, no count", ErrMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > MaxBatch {
		return 0, fmt.Errorf("%w: %d records exceed %d", ErrMalformed, n, MaxBatch)
	}
	b = b[2:]
	for i := 0; i < n; i++ {
		if len(b) < recordHeader {
			return 0, fmt.Errorf("%w: record %d truncated", ErrMalformed, i)
		}
		r := Record{Kind: Kind(b[0]), At: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9])))}
		b = b[recordHeader:]
		switch r.Kind {
		case KindInput:
			if len(b) < 4 {
				return 0, fmt.Errorf("%w: record %d: packet length truncated", ErrMalformed, i)
			}
			l := binary.BigEndian.Uint32(b)
			if l > MaxPacket || uint64(len(b)-4) < uint64(l) {
				return 0, fmt.Errorf("%w: record %d: packet of %d bytes (limit %d, %d left)", ErrMalformed, i, l, MaxPacket, len(b)-4)
			}
			r.Packet = b[4 : 4+l : 4+l]
			b = b[4+l:]
		case KindOutput:
			if len(b) < digestSize {
				return 0, fmt.Errorf("%w: record %d: digest truncated", ErrMalformed, i)
			}
			var err error
			if r.Digest, err = decodeDigest(b[:digestSize]); err != nil {
				return 0, fmt.Errorf("%w: record %d: %v", ErrMalformed, i, err)
			}
			b = b[digestSize:]
		default:
			return 0, fmt.Errorf("%w: record %d has unknown kind %d", ErrMalformed, i, r.Kind)
		}
		if fn != nil {
			fn(r)
		}
	}
	if len(b) != 0 {
		return 0, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
	}
	return n, nil
}
