// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package peer is the channel between the primary's and the backup's shim
// of one replicated pair: a mutually authenticated TLS 1.3 connection that
// carries, as interleaved frames of package wire, checkpoints from the
// primary (Sender) to the backup (Receiver), acknowledgements back, and
// heartbeats in both directions, watched by a FailureDetector on each side.
//
// One connection carries everything. Heartbeats are never stuck behind a
// checkpoint: each side has a single writer goroutine that always prefers
// control frames (heartbeats, acks, errors) over checkpoint chunks, and a
// chunk is at most ChunkSize bytes, so a heartbeat waits for at most one
// chunk. A second connection would only move the queueing into the kernel
// (both share the link) while adding a second handshake and a way for the
// two to disagree about whether the peer is alive.
package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/wire"
)

// Defaults of Options.
const (
	DefaultChunkSize        = 256 << 10
	DefaultHandshakeTimeout = 5 * time.Second
)

// Disconnect says how a primary connection ended (Receiver).
type Disconnect struct {
	Err error
	// Lost: the connection ended from the primary's side or the network
	// (EOF, reset, TLS error, a frame cut short; ErrConnectionLost), not
	// by this side or a refused frame. Goodbye says whether the primary
	// meant it.
	Lost    bool
	Goodbye *GoodbyeError // nil: the primary said no goodbye
	// LastHeard is when bytes from the primary last arrived; Timeout the
	// failure detector's bound on this connection: with no goodbye, the
	// primary counts as failed once it has been silent that long.
	LastHeard time.Time
	Timeout   time.Duration
}

// Options configure one side of the channel of one pair.
type Options struct {
	Pair     string    // pair name, the same on both sides
	PeerName string    // identity the peer's certificate must carry (SAN)
	Mode     wire.Mode // both sides must run the same mode
	// Image is the digest of the image this side's container runs (empty:
	// none); both sides must run the same.
	Image           string
	Heartbeat       time.Duration
	HeartbeatMisses int
	// ChunkSize is the file content per CheckpointChunk frame, at most
	// wire.MaxChunkData. Smaller means heartbeats wait less behind a chunk.
	ChunkSize        int
	MaxPayload       uint32 // per frame; 0: wire.DefaultMaxPayload
	HandshakeTimeout time.Duration
	Logger           *slog.Logger

	// OnPeerFailed is called once per connection when the peer has been
	// silent for HeartbeatMisses of its heartbeat intervals, just before the
	// connection is closed (so before OnDisconnected). It must not block.
	OnPeerFailed func(PeerFailure)
	// OnAck (Sender) is called for every Ack or Nack from the backup, from
	// the connection's reader goroutine: it must not block.
	OnAck func(Ack)
	// OnCommit (Receiver) is called after a checkpoint is committed and
	// before it is acknowledged. It must not block.
	OnCommit func(ckptstore.Checkpoint)
	// OnConnected and OnDisconnected (Receiver) bracket each authenticated
	// primary connection; a replaced connection's OnDisconnected comes
	// before its successor's OnConnected. They must not block.
	OnConnected    func()
	OnDisconnected func(Disconnect)
	// OnLog (Receiver, hybrid mode) takes a batch of the input log whose
	// first record is index first after the checkpoint of epoch, and returns
	// the position the log is held up to, which is acknowledged; an error
	// ends the connection (a log with a hole is never acknowledged). It runs
	// on the reader goroutine and must not block. Nil: log frames are refused.
	OnLog func(epoch, first uint64, data []byte) (heldEpoch, heldIndex uint64, err error)
	// OnLogAck (Sender, hybrid mode) is called for every LogAck: the backup
	// holds the log up to index after the checkpoint of epoch. It runs on
	// the reader goroutine and must not block.
	OnLogAck func(epoch, index uint64)
	// OnSuperseded (Sender) is called when the backup says it has declared
	// this primary failed and takes over (see Receiver.Supersede), from the
	// reader goroutine, before the connection ends. It must not block.
	OnSuperseded func(reason string)

	hooks *testHooks // fault injection for tests
}

// testHooks let tests break things at the frame level: TLS below would
// reject any byte flipped in transit.
type testHooks struct {
	chunk   func(*wire.CheckpointChunk) // after hashing, before encoding
	frame   func(wire.Type, []byte)     // on the encoded frame, after the CRC
	frameIn func(wire.Frame)            // every frame read, on the reader goroutine
	silence atomic.Bool                 // drop every outgoing frame: a cut link
	// supersede (test Receiver, see startBackup): on a peer failure, tell
	// the peer this side takes over, with this reason.
	supersede string
}

func (o Options) withDefaults() Options {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = wire.DefaultMaxPayload
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.Mode == 0 {
		o.Mode = wire.ModeEpoch
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if err := wire.CheckPairName(o.Pair); err != nil {
		errs = append(errs, err)
	}
	if o.PeerName == "" {
		errs = append(errs, errors.New("expected peer name is empty: the peer's identity cannot be checked"))
	}
	if o.Heartbeat <= 0 || o.HeartbeatMisses < 1 {
		errs = append(errs, fmt.Errorf("heartbeat %s × %d misses: both must be positive", o.Heartbeat, o.HeartbeatMisses))
	}
	if o.ChunkSize < 1 || o.ChunkSize > wire.MaxChunkData {
		errs = append(errs, fmt.Errorf("chunk size %d outside [1, %d]", o.ChunkSize, wire.MaxChunkData))
	}
	if uint64(o.MaxPayload) < uint64(o.ChunkSize)+wire.MaxPathLen+64 {
		errs = append(errs, fmt.Errorf("max payload %d cannot hold a chunk of %d", o.MaxPayload, o.ChunkSize))
	}
	if o.Mode != wire.ModeEpoch && o.Mode != wire.ModeHybrid {
		errs = append(errs, fmt.Errorf("mode %s", o.Mode))
	}
	if err := wire.CheckImageDigest(o.Image); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer options: %w", err)
	}
	return nil
}
