// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// MaxPayload bounds the payload of one frame; 0 means DefaultMaxPayload.
	MaxPayload uint32
	// Pair is the pair every frame must belong to.
	Pair PairID
	// PeerRole is the role of the side that writes the stream; frames that
	// role never sends are refused.
	PeerRole Role
}

// Reader reads the frames of one connection and enforces the stream rules on
// top of the frame format: a Hello first and only once, sequence numbers
// 1, 2, 3, ... without gaps, checkpoint frames in Begin, (Chunk|Copy)*, End|Abort
// order with strictly increasing checkpoint epochs, Ack epochs strictly
// increasing, heartbeat epochs never decreasing, nothing after a Goodbye,
// and only the frame types the peer's role sends. The first error is final: a stream that broke a
// rule cannot be trusted to be aligned any more.
type Reader struct {
	r    *bufio.Reader
	opts ReaderOptions
	hdr  [HeaderSize]byte
	buf  []byte
	err  error

	seq          uint64
	helloSeen    bool
	goodbyeSeen  bool
	inCheckpoint bool
	ckptEpoch    uint64 // epoch of the last CheckpointBegin
	ackEpoch     uint64
	hbEpoch      uint64
}

// NewReader returns a Reader of the frames in r.
func NewReader(r io.Reader, opts ReaderOptions) *Reader {
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), opts: opts}
}

// Next returns the next frame. Its payload is valid until the next call.
// At a clean end of stream (between frames) it returns io.EOF.
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	f, err := r.next()
	if err != nil {
		r.err = err
	}
	return f, err
}

func (r *Reader) next() (Frame, error) {
	if n, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		switch {
		case n == 0 && errors.Is(err, io.EOF):
			return Frame{}, io.EOF
		case !isEOF(err):
			// The transport failed (reset, TLS alert, deadline): say so
			// rather than blame the frame.
			return Frame{}, fmt.Errorf("reading frame header after sequence %d: %w", r.seq, err)
		}
		return Frame{}, fmt.Errorf("%w: frame header after sequence %d: %d of %d bytes", ErrTruncated, r.seq, n, HeaderSize)
	}
	h, crc, err := decodeHeader(r.hdr[:], r.opts.MaxPayload)
	if err != nil {
		return Frame{}, fmt.Errorf("frame after sequence %d: %w", r.seq, err)
	}
	if cap(r.buf) < int(h.Length) {
		r.buf = make([]byte, h.Length)
	}
	payload := r.buf[:h.Length]
	if n, err := io.ReadFull(r.r, payload); err != nil {
		if !isEOF(err) {
			return Frame{}, fmt.Errorf("reading %s payload of sequence %d: %w", h.Type, h.Seq, err)
		}
		return Frame{}, fmt.Errorf("%w: %s payload of sequence %d: %d of %d bytes", ErrTruncated, h.Type, h.Seq, n, h.Length)
	}
	if got := checksum(r.hdr[:], payload); got != crc {
		return Frame{}, fmt.Errorf("%w: %s sequence %d: computed %#08x, header says %#08x", ErrChecksum, h.Type, h.Seq, got, crc)
	}
	if err := r.check(h); err != nil {
		return Frame{}, err
	}
	return Frame{Header: h, Payload: payload}, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }

// allowed lists the frame types each role writes.
var allowed = map[Role]map[Type]bool{
	RolePrimary: {TypeHello: true, TypeHeartbeat: true, TypeCheckpointBegin: true, TypeCheckpointChunk: true,
		TypeCheckpointEnd: true, TypeCheckpointAbort: true, TypeError: true, TypeLogRecord: true, TypeCheckpointCopy: true,
		TypeGoodbye: true},
	RoleBackup: {TypeHello: true, TypeHeartbeat: true, TypeAck: true, TypeError: true, TypeLogAck: true},
}

func (r *Reader) check(h Header) error {
	if h.Seq != r.seq+1 {
		return fmt.Errorf("%w: %s has sequence %d, expected %d", ErrSequence, h.Type, h.Seq, r.seq+1)
	}
	r.seq = h.Seq
	if h.Pair != r.opts.Pair {
		return fmt.Errorf("%w: %s sequence %d is for pair %s, this connection is for %s", ErrPairMismatch, h.Type, h.Seq, h.Pair, r.opts.Pair)
	}
	if !allowed[r.opts.PeerRole][h.Type] {
		return fmt.Errorf("%w: %s from the %s (sequence %d)", ErrUnexpectedFrame, h.Type, r.opts.PeerRole, h.Seq)
	}
	if !r.helloSeen {
		if h.Type != TypeHello {
			return fmt.Errorf("%w: %s before Hello (sequence %d)", ErrUnexpectedFrame, h.Type, h.Seq)
		}
		r.helloSeen = true
		return nil
	}
	if r.goodbyeSeen {
		return fmt.Errorf("%w: %s after Goodbye (sequence %d)", ErrUnexpectedFrame, h.Type, h.Seq)
	}
	switch h.Type {
	case TypeGoodbye:
		// A transfer may be open: the goodbye goes on the control lane,
		// ahead of the rest of the checkpoint, which is then never sent.
		r.goodbyeSeen = true
	case TypeHello:
		return fmt.Errorf("%w: second Hello (sequence %d)", ErrUnexpectedFrame, h.Seq)
	case TypeHeartbeat:
		if h.Epoch < r.hbEpoch {
			return fmt.Errorf("%w: heartbeat epoch %d after %d (sequence %d)", ErrEpochOrder, h.Epoch, r.hbEpoch, h.Seq)
		}
		r.hbEpoch = h.Epoch
	case TypeCheckpointBegin:
		if r.inCheckpoint {
			return fmt.Errorf("%w: CheckpointBegin of epoch %d while epoch %d is in transfer (sequence %d)", ErrUnexpectedFrame, h.Epoch, r.ckptEpoch, h.Seq)
		}
		if h.Epoch <= r.ckptEpoch {
			return fmt.Errorf("%w: checkpoint epoch %d after %d (sequence %d)", ErrEpochOrder, h.Epoch, r.ckptEpoch, h.Seq)
		}
		r.inCheckpoint, r.ckptEpoch = true, h.Epoch
	case TypeCheckpointChunk, TypeCheckpointCopy, TypeCheckpointEnd, TypeCheckpointAbort:
		if !r.inCheckpoint {
			return fmt.Errorf("%w: %s of epoch %d outside a checkpoint transfer (sequence %d)", ErrUnexpectedFrame, h.Type, h.Epoch, h.Seq)
		}
		if h.Epoch != r.ckptEpoch {
			return fmt.Errorf("%w: %s of epoch %d during the transfer of epoch %d (sequence %d)", ErrEpochOrder, h.Type, h.Epoch, r.ckptEpoch, h.Seq)
		}
		if h.Type == TypeCheckpointEnd || h.Type == TypeCheckpointAbort {
			r.inCheckpoint = false
		}
	case TypeAck:
		if h.Epoch <= r.ackEpoch {
			return fmt.Errorf("%w: Ack of epoch %d after %d (sequence %d)", ErrEpochOrder, h.Epoch, r.ackEpoch, h.Seq)
		}
		r.ackEpoch = h.Epoch
	}
	return nil
}

// Encoder numbers and encodes the frames of one connection's direction.
// It is not safe for concurrent use: one writer goroutine owns it.
type Encoder struct {
	Pair PairID
	seq  uint64
}

// Append appends the next frame to dst.
func (e *Encoder) Append(dst []byte, t Type, epoch uint64, payload []byte) []byte {
	e.seq++
	return AppendFrame(dst, Header{Type: t, Pair: e.Pair, Epoch: epoch, Seq: e.seq}, payload)
}
