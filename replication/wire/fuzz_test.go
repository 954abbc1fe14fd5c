// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"
)

// FuzzReader feeds arbitrary streams to the strict reader: it must never
// panic, never return a frame that breaks its limits, and a frame it accepts
// must re-encode to the bytes it came from.
func FuzzReader(f *testing.F) {
	f.Add(stream(fr(TypeHello, 0, helloP), fr(TypeHeartbeat, 0, hbP), fr(TypeCheckpointBegin, 1, beginP),
		fr(TypeCheckpointChunk, 1, chunkP), fr(TypeCheckpointEnd, 1, endP)), uint8(RolePrimary))
	f.Add(stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointCopy, 2, copyP),
		fr(TypeCheckpointEnd, 2, endP)), uint8(RolePrimary))
	f.Add(stream(fr(TypeHello, 0, helloP), fr(TypeAck, 1, Ack{}.Append(nil))), uint8(RoleBackup))
	f.Add(stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 1, beginP), fr(TypeGoodbye, 1, byeP)), uint8(RolePrimary))
	f.Add([]byte("RRCP"), uint8(RolePrimary))
	f.Fuzz(func(t *testing.T, in []byte, role uint8) {
		r := NewReader(bytes.NewReader(in), ReaderOptions{Pair: testPair, PeerRole: Role(role), MaxPayload: 1 << 16})
		var re []byte
		for {
			fr, err := r.Next()
			if err != nil {
				if err == io.EOF && !bytes.Equal(re, in) {
					t.Fatalf("clean EOF but re-encoding differs")
				}
				if err != io.EOF && !isDecoderError(err) {
					t.Fatalf("error without a sentinel: %v", err)
				}
				return
			}
			if len(fr.Payload) > 1<<16 {
				t.Fatalf("payload of %d bytes passed the limit", len(fr.Payload))
			}
			re = AppendFrame(re, fr.Header, fr.Payload)
			if !bytes.HasPrefix(in, re) {
				t.Fatalf("re-encoding of %s differs from input", fr.Type)
			}
		}
	})
}

func isDecoderError(err error) bool {
	for _, s := range []error{ErrBadMagic, ErrBadVersion, ErrUnknownType, ErrBadFlags, ErrPayloadTooLarge, ErrTruncated,
		ErrChecksum, ErrSequence, ErrEpochOrder, ErrUnexpectedFrame, ErrPairMismatch} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// roundTrip checks that a payload the decoder accepts re-encodes to the same
// bytes: one value, one encoding.
func roundTrip[T interface{ Append([]byte) []byte }](t *testing.T, in []byte, decode func([]byte) (T, error)) {
	v, err := decode(in)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error without ErrMalformed: %v", err)
		}
		return
	}
	if out := v.Append(nil); !bytes.Equal(out, in) {
		t.Fatalf("re-encoding differs:\n in %x\nout %x", in, out)
	}
}

func FuzzDecodeHello(f *testing.F) {
	f.Add(helloP)
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeHello) })
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add(hbP)
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeHeartbeat) })
}

func FuzzDecodeCheckpointCopy(f *testing.F) {
	f.Add(copyP)
	f.Fuzz(func(t *testing.T, in []byte) {
		roundTrip(t, in, DecodeCheckpointCopy)
		c, err := DecodeCheckpointCopy(in)
		if err == nil && (c.Offset%BlockSize != 0 || c.BaseOffset%BlockSize != 0 || c.Length == 0 || c.Offset+c.Length > c.FileSize) {
			t.Fatalf("accepted a copy that breaks the rules: %+v", c)
		}
	})
}

func FuzzDecodeCheckpointBegin(f *testing.F) {
	f.Add(beginP)
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeCheckpointBegin) })
}

func FuzzDecodeCheckpointChunk(f *testing.F) {
	f.Add(chunkP)
	f.Add(CheckpointChunk{Path: "x", FileSize: 0}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeCheckpointChunk) })
}

func FuzzDecodeCheckpointEnd(f *testing.F) {
	f.Add(endP)
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeCheckpointEnd) })
}

func FuzzDecodeCheckpointAbort(f *testing.F) {
	f.Add(CheckpointAbort{Reason: "cancelled"}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeCheckpointAbort) })
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(Ack{}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeAck) })
}

func FuzzDecodeError(f *testing.F) {
	f.Add(Error{Code: CodeCorrupt, Message: "digest mismatch"}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeError) })
}

func FuzzDecodeLogRecord(f *testing.F) {
	f.Add(LogRecord{Index: 1, Data: []byte("pkt")}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeLogRecord) })
}

func FuzzDecodeLogAck(f *testing.F) {
	f.Add(LogAck{Index: 1}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) { roundTrip(t, in, DecodeLogAck) })
}

func FuzzDecodeGoodbye(f *testing.F) {
	f.Add(byeP)
	f.Add(Goodbye{Reason: GoodbyeShutdown}.Append(nil))
	f.Add(Goodbye{Reason: GoodbyeDemoted, Message: "planned switchover"}.Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		roundTrip(t, in, DecodeGoodbye)
		g, err := DecodeGoodbye(in)
		if err == nil && (g.Reason.String() == fmt.Sprintf("GoodbyeReason(%d)", uint8(g.Reason)) || !utf8.ValidString(g.Message)) {
			t.Fatalf("accepted a goodbye that breaks the rules: %+v", g)
		}
	})
}
