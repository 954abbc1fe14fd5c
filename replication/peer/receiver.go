// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/wire"
)

// Receiver is the backup's end of the channel: it accepts the primary,
// stores its checkpoints in a CheckpointStore, and acknowledges each one
// once committed.
type Receiver struct {
	opts  Options
	tls   *tls.Config
	store *ckptstore.Store

	mu     sync.Mutex
	active *session // the current primary connection
}

// NewReceiver returns a Receiver that stores into store.
func NewReceiver(store *ckptstore.Store, creds *peertls.Credentials, opts Options) (*Receiver, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	cfg, err := creds.ServerConfig(opts.PeerName)
	if err != nil {
		return nil, err
	}
	return &Receiver{opts: opts, tls: cfg, store: store}, nil
}

// Serve accepts connections for this Receiver's pair (one listening address
// per pair) on ln (plain TCP: TLS is done here, so that a
// refused peer is logged with the pair) until ctx ends. A new authenticated
// primary connection replaces the previous one (the primary reconnected);
// the previous one's transfer in progress is discarded.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	log := r.opts.Logger.With("pair", r.opts.Pair, "role", "backup")
	log.Info("waiting for the primary", "listen", ln.Addr().String(), "committed", r.store.CurrentEpoch())
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting peer connections: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serveConn(ctx, raw)
		}()
	}
}

// Supersede tells the connected primary that this backup takes over: call
// it from OnPeerFailed when promoting, before the promotion closes the
// connection. A primary that really failed never reads it; one that was
// only silent (a process stalled past every grace, one direction of a
// path lost) learns that it must not go on serving (fencing) rather than
// going degraded next to the promoted backup. It waits for the write, at
// most supersedeTimeout: a dead peer's socket still takes it at once.
func (r *Receiver) Supersede(reason string) {
	r.mu.Lock()
	s := r.active
	r.mu.Unlock()
	if s != nil {
		s.tell(0, wire.CodeSuperseded, reason, supersedeTimeout)
	}
}

const supersedeTimeout = 200 * time.Millisecond

func (r *Receiver) serveConn(ctx context.Context, raw net.Conn) {
	tcp := watch(raw)
	conn := tls.Server(tcp, r.tls)
	if err := tlsHandshake(ctx, conn, r.opts, r.opts.Logger); err != nil {
		return
	}
	s := newSession(ctx, r.opts, wire.RoleBackup, conn, tcp)
	defer s.shutdown()
	if err := s.handshake(r.store.CurrentEpoch()); err != nil {
		s.log.Warn("peer refused", "err", err)
		return
	}
	// Replace the previous connection and wait until it has let go of the
	// store (its staging is discarded when its session ends).
	r.mu.Lock()
	prev := r.active
	r.active = s
	r.mu.Unlock()
	if prev != nil {
		s.log.Warn("primary reconnected; dropping the previous connection", "previous", prev.conn.RemoteAddr().String())
		prev.shutdown()
		select {
		case <-prev.released:
		case <-ctx.Done():
			return
		}
	}
	defer func() {
		r.mu.Lock()
		if r.active == s {
			r.active = nil
		}
		r.mu.Unlock()
	}()
	s.latestEpoch.Store(r.store.CurrentEpoch())
	s.log.Info("primary connected", "committed", r.store.CurrentEpoch(), "primary_acked", s.peerEpoch)
	if r.opts.OnConnected != nil {
		r.opts.OnConnected()
	}
	in := &inbound{r: r, s: s}
	err := s.run(in.handle)
	in.discard(fmt.Sprintf("connection ended: %v", err))
	if r.opts.OnDisconnected != nil {
		d := Disconnect{Err: err, Lost: errors.Is(err, ErrConnectionLost), LastHeard: s.det.last(), Timeout: s.det.Timeout()}
		errors.As(err, &d.Goodbye)
		r.opts.OnDisconnected(d)
	}
	close(s.released)
}

// inbound is the state of the checkpoint transfer on one connection.
type inbound struct {
	r       *Receiver
	s       *session
	staging *ckptstore.Staging
	// refused is an epoch whose remaining frames are skipped: it was
	// already answered with an Error.
	refused uint64
}

func (in *inbound) handle(f wire.Frame) error {
	switch f.Type {
	case wire.TypeCheckpointBegin:
		b, err := wire.DecodeCheckpointBegin(f.Payload)
		if err != nil {
			return err
		}
		st, err := in.r.store.Begin(f.Epoch, b)
		if err != nil {
			in.nack(f.Epoch, err)
			return nil
		}
		in.staging = st
		in.s.log.Debug("receiving checkpoint", "epoch", f.Epoch, "size", b.TotalSize, "files", b.FileCount, "base", b.BaseEpoch)
	case wire.TypeCheckpointChunk:
		return storeFrame(in, f, "chunk", wire.DecodeCheckpointChunk, (*ckptstore.Staging).Write)
	case wire.TypeCheckpointCopy:
		return storeFrame(in, f, "copy", wire.DecodeCheckpointCopy, (*ckptstore.Staging).Copy)
	case wire.TypeCheckpointEnd:
		if in.refused == f.Epoch {
			return nil
		}
		e, err := wire.DecodeCheckpointEnd(f.Payload)
		if err != nil {
			return err
		}
		st := in.staging
		in.staging = nil
		if st == nil {
			return fmt.Errorf("end of checkpoint %d without a transfer in progress", f.Epoch)
		}
		c, err := st.Commit(e.Digest)
		if err != nil {
			in.nack(f.Epoch, err)
			return nil
		}
		in.s.latestEpoch.Store(c.Epoch)
		if in.r.opts.OnCommit != nil {
			in.r.opts.OnCommit(c)
		}
		in.s.reply(wire.TypeAck, c.Epoch, wire.Ack{Digest: c.Digest}.Append(nil))
		// A part of the current checkpoint is read back each time: damage
		// on disk would otherwise live on in the deltas built on it (the
		// store then makes the primary send the next one in full).
		// Damage found is logged and dealt with by the store itself (it
		// makes the primary send the next checkpoint in full).
		_ = in.r.store.Scrub(min(max(c.Size/20, 1<<20), 16<<20))
	case wire.TypeCheckpointAbort:
		a, err := wire.DecodeCheckpointAbort(f.Payload)
		if err != nil {
			return err
		}
		in.discard("primary aborted: " + a.Reason)
	case wire.TypeGoodbye:
		g, err := wire.DecodeGoodbye(f.Payload)
		if err != nil {
			return err
		}
		in.s.log.Info("the primary said goodbye: it stops on purpose", "reason", g.Reason, "message", g.Message, "epoch", f.Epoch)
		return &GoodbyeError{Reason: g.Reason, Message: g.Message}
	case wire.TypeError:
		e, err := wire.DecodeError(f.Payload)
		if err != nil {
			return err
		}
		in.s.log.Error("primary reported an error", "epoch", f.Epoch, "code", e.Code, "message", e.Message)
	case wire.TypeLogRecord:
		if in.r.opts.OnLog == nil {
			// Not hybrid mode: refuse rather than pretend to hold it.
			in.s.reply(wire.TypeError, f.Epoch, wire.Error{Code: wire.CodeUnsupported, Message: "input log in epoch mode"}.Append(nil))
			return nil
		}
		l, err := wire.DecodeLogRecord(f.Payload)
		if err != nil {
			return err
		}
		epoch, index, err := in.r.opts.OnLog(f.Epoch, l.Index, l.Data)
		if err != nil {
			in.s.refuse(f.Epoch, wire.CodeProtocol, err.Error())
			return fmt.Errorf("input log: %w", err)
		}
		in.s.replyNow(wire.TypeLogAck, epoch, wire.LogAck{Index: index}.Append(nil))
	}
	return nil
}

// storeFrame decodes a frame with the content of the checkpoint in
// transfer (a chunk or a copy) and writes it into the staging checkpoint;
// a write that fails refuses the checkpoint, whose remaining frames are
// then skipped. A frame outside a transfer breaks the protocol.
func storeFrame[T any](in *inbound, f wire.Frame, what string, decode func([]byte) (T, error), write func(*ckptstore.Staging, T) error) error {
	if in.refused == f.Epoch {
		return nil
	}
	v, err := decode(f.Payload)
	if err != nil {
		return err
	}
	if in.staging == nil {
		return fmt.Errorf("%s of checkpoint %d without a transfer in progress", what, f.Epoch)
	}
	if err := write(in.staging, v); err != nil {
		in.staging.Abort(err.Error())
		in.staging = nil
		in.nack(f.Epoch, err)
	}
	return nil
}

func (in *inbound) discard(reason string) {
	if in.staging != nil {
		in.staging.Abort(reason)
		in.staging = nil
	}
}

// nack refuses the checkpoint of epoch and skips the rest of its frames.
func (in *inbound) nack(epoch uint64, err error) {
	in.refused = epoch
	code := wire.CodeStorage
	switch {
	case errors.Is(err, ckptstore.ErrEpochOrder):
		code = wire.CodeEpochOrder
	case errors.Is(err, ckptstore.ErrCorrupt):
		code = wire.CodeCorrupt
	case errors.Is(err, ckptstore.ErrBaseMissing):
		code = wire.CodeBaseMissing
	}
	in.s.log.Warn("checkpoint refused; previous stays current", "epoch", epoch, "code", code, "current", in.r.store.CurrentEpoch(), "err", err)
	in.s.reply(wire.TypeError, epoch, wire.Error{Code: code, Message: err.Error()}.Append(nil))
}
