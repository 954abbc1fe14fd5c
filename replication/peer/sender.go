// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/wire"
)

// ErrEpochOrder is returned by Send for an epoch not above the last one
// sent or the one the backup already holds.
var ErrEpochOrder = errors.New("checkpoint epoch not above the last one")

// Ack is the backup's answer about one checkpoint.
type Ack struct {
	Epoch  uint64
	At     time.Time // when the answer arrived
	Digest [32]byte  // what the backup verified (equal to what was sent)
	Err    error     // nil: committed; else a *NackError or the connection's end
}

// NackError is a checkpoint refused by the backup.
type NackError struct {
	Epoch   uint64
	Code    wire.ErrorCode
	Message string
}

func (e *NackError) Error() string {
	return fmt.Sprintf("backup refused checkpoint %d (%s): %s", e.Epoch, e.Code, e.Message)
}

// inFlight is a checkpoint sent (or being sent) and not yet answered.
type inFlight struct {
	ended  bool // CheckpointEnd queued: an Ack is now possible
	digest [32]byte
}

// Sender is the primary's end of the channel.
type Sender struct {
	s *session

	sendMu   sync.Mutex // one checkpoint at a time
	lastSent uint64
	base     *sentImage // the last checkpoint sent in full or as a delta; under sendMu
	seed     maphash.Seed
	// baseStale is set when the backup refused a checkpoint: the base may
	// not be what it holds, so the next checkpoint goes in full.
	baseStale atomic.Bool

	mu      sync.Mutex
	logSent logPosition // the last log record queued
	acked   uint64
	answers map[uint64]Ack       // answers not yet collected by WaitAck
	sent    map[uint64]*inFlight // checkpoints awaiting an answer
	changed chan struct{}        // closed and replaced when an answer arrives
}

// Dial connects to the backup at addr, authenticates both ends and runs the
// session until Close or ctx ends. The backup's Hello tells where it stands
// (BackupCommitted); epochs sent must be above it.
func Dial(ctx context.Context, addr string, creds *peertls.Credentials, opts Options) (*Sender, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	cfg, err := creds.ClientConfig(opts.PeerName)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("pair", opts.Pair, "role", "primary")
	dctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		log.Warn("dialing backup", "addr", addr, "err", err)
		return nil, fmt.Errorf("dialing backup %s: %w", addr, err)
	}
	tcp := watch(raw)
	conn := tls.Client(tcp, cfg)
	if err := tlsHandshake(ctx, conn, opts, opts.Logger); err != nil {
		return nil, err
	}
	s := newSession(ctx, opts, wire.RolePrimary, conn, tcp)
	if err := s.handshake(0); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("handshake with backup %s: %w", addr, err)
	}
	snd := &Sender{s: s, seed: maphash.MakeSeed(), acked: s.peerEpoch, lastSent: s.peerEpoch, answers: map[uint64]Ack{},
		sent: map[uint64]*inFlight{}, changed: make(chan struct{})}
	s.latestEpoch.Store(s.peerEpoch)
	s.log.Info("connected to backup", "backup_committed", s.peerEpoch)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		snd.failPending(s.run(snd.handle))
	}()
	return snd, nil
}

// BackupCommitted is the backup's last committed epoch when the session
// started: the next checkpoint must have a higher epoch.
func (x *Sender) BackupCommitted() uint64 { return x.s.peerEpoch }

// AckedEpoch is the highest epoch the backup has committed (acknowledged).
func (x *Sender) AckedEpoch() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.acked
}

// RTT is the last round-trip time measured with heartbeats, 0 before one.
func (x *Sender) RTT() time.Duration { return time.Duration(x.s.rtt.Load()) }

// Done is closed when the session has ended; Err then says why.
func (x *Sender) Done() <-chan struct{} { return x.s.closed }

// Err is why the session ended, nil while it runs.
func (x *Sender) Err() error { return x.s.Err() }

// Close ends the session.
func (x *Sender) Close() error {
	x.s.shutdown()
	x.sendMu.Lock() // a Send in progress ends with the session
	x.base.release()
	x.base = nil
	x.sendMu.Unlock()
	return nil
}

// Goodbye tells the backup that this primary stops on purpose, so that it
// does not take over, and ends the session. It waits for the write at most
// goodbyeTimeout (a backup that is gone takes it at once or never).
// Checkpoints and log frames still queued are not sent: the Goodbye goes on
// the control lane, and nothing may follow it.
func (x *Sender) Goodbye(reason wire.GoodbyeReason, message string) error {
	err := x.s.sayGoodbye(reason, message)
	x.Close()
	return err
}

// Send transfers checkpoint c. It returns once every frame of it has been
// handed to the connection's writer (not when the backup has it: use
// WaitAck or OnAck for that), so the engine can let the container run
// meanwhile. Cancelling ctx aborts the transfer: the backup discards it.
//
// A checkpoint is sent as a delta against the previous one sent on this
// session (see delta.go) unless it is the first, or the backup refused one
// since: then it goes in full. The files of c may be removed as soon as Send
// returns, but they must never be modified, during Send or after: the base
// of the next delta is their mapped content (CRIU writes each epoch's
// images as new files).
func (x *Sender) Send(ctx context.Context, c Checkpoint) (SendStats, error) {
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	if c.Epoch <= x.lastSent {
		return SendStats{}, fmt.Errorf("sending checkpoint %d: %w (last sent or held by the backup: %d)", c.Epoch, ErrEpochOrder, x.lastSent)
	}
	if x.s.Err() != nil {
		return SendStats{}, fmt.Errorf("sending checkpoint %d: %w", c.Epoch, x.s.Err())
	}
	files, err := collect(c.Sources)
	if err != nil {
		return SendStats{}, fmt.Errorf("sending checkpoint %d: %w", c.Epoch, err)
	}
	base := x.base
	x.base = nil
	defer base.release()
	if x.baseStale.Swap(false) {
		base = nil
	}
	var st SendStats
	for _, f := range files {
		st.Size += f.size
	}
	if base != nil {
		st.BaseEpoch = base.epoch
	}
	start := time.Now()
	x.lastSent = c.Epoch // even if aborted: the wire refuses an epoch twice
	x.s.latestEpoch.Store(c.Epoch)
	// Registered before Begin: the backup may refuse it at once.
	x.mu.Lock()
	x.sent[c.Epoch] = &inFlight{}
	x.mu.Unlock()
	begin := wire.CheckpointBegin{TotalSize: st.Size, FileCount: uint32(len(files)), BaseEpoch: st.BaseEpoch}
	if err := x.s.enqueue(ctx, x.s.bulk, wire.TypeCheckpointBegin, c.Epoch, begin.Append(nil), false); err != nil {
		return st, fmt.Errorf("sending checkpoint %d: %w", c.Epoch, err)
	}
	next := &sentImage{epoch: c.Epoch, files: make(map[string]*sentFile, len(files)), seed: x.seed}
	digest, err := x.sendFiles(ctx, c.Epoch, files, base, next, &st)
	if err != nil {
		next.release()
		x.abort(c.Epoch, err)
		return st, fmt.Errorf("sending checkpoint %d: %w", c.Epoch, err)
	}
	x.mu.Lock()
	if f := x.sent[c.Epoch]; f != nil {
		f.ended, f.digest = true, digest
	}
	x.mu.Unlock()
	if err := x.s.enqueue(ctx, x.s.bulk, wire.TypeCheckpointEnd, c.Epoch, wire.CheckpointEnd{Digest: digest}.Append(nil), false); err != nil {
		next.release()
		x.abort(c.Epoch, err)
		return st, fmt.Errorf("sending checkpoint %d: %w", c.Epoch, err)
	}
	x.base = next
	x.s.log.Debug("checkpoint queued", "epoch", c.Epoch, "size", st.Size, "sent", st.Sent, "copied", st.Copied,
		"base", st.BaseEpoch, "files", len(files), "took", time.Since(start))
	return st, nil
}

// abort tells the backup to discard the transfer; it goes on the bulk lane
// so that it follows the chunks already queued.
func (x *Sender) abort(epoch uint64, why error) {
	x.s.log.Warn("aborting checkpoint transfer", "epoch", epoch, "err", why)
	x.mu.Lock()
	delete(x.sent, epoch) // no answer will come
	x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), x.s.opts.HandshakeTimeout)
	defer cancel()
	if err := x.s.enqueue(ctx, x.s.bulk, wire.TypeCheckpointAbort, epoch, wire.CheckpointAbort{Reason: why.Error()}.Append(nil), false); err != nil {
		// The connection is ending: the backup drops the partial
		// checkpoint when it does.
		x.s.log.Warn("could not send the abort", "epoch", epoch, "err", err)
	}
}

func (x *Sender) sendFiles(ctx context.Context, epoch uint64, files []fileEntry, base, next *sentImage, st *SendStats) ([32]byte, error) {
	h := wire.NewContentHasher()
	for _, f := range files {
		data, unmap, err := mapFile(f)
		if err != nil {
			return [32]byte{}, fmt.Errorf("%s: %w", f.path, err)
		}
		sf := &sentFile{path: f.path, data: data, unmap: unmap, digest: make([]wire.BlockDigest, (f.size+wire.BlockSize-1)/wire.BlockSize)}
		next.files[f.path] = sf
		h.BeginFile(f.path, f.mode, f.size)
		d := fileDelta{x: x, ctx: ctx, epoch: epoch, entry: f, sf: sf, base: base, h: h, stats: st}
		if err := d.run(); err != nil {
			return [32]byte{}, fmt.Errorf("%s: %w", f.path, err)
		}
	}
	return h.Sum(), nil
}

// handle processes the backup's frames (reader goroutine).
func (x *Sender) handle(f wire.Frame) error {
	switch f.Type {
	case wire.TypeAck:
		a, err := wire.DecodeAck(f.Payload)
		if err != nil {
			return err
		}
		x.mu.Lock()
		fl := x.sent[f.Epoch]
		ok := fl != nil && fl.ended && fl.digest == a.Digest
		x.mu.Unlock()
		if !ok {
			return fmt.Errorf("backup acknowledged checkpoint %d that was not sent with that digest", f.Epoch)
		}
		x.answer(Ack{Epoch: f.Epoch, At: time.Now(), Digest: a.Digest})
	case wire.TypeError:
		e, err := wire.DecodeError(f.Payload)
		if err != nil {
			return err
		}
		if f.Epoch == 0 && e.Code == wire.CodeSuperseded {
			x.s.log.Error("the backup declared this primary failed and takes over", "message", e.Message)
			if x.s.opts.OnSuperseded != nil {
				x.s.opts.OnSuperseded(e.Message)
			}
			return fmt.Errorf("superseded by the backup: %s", e.Message)
		}
		if f.Epoch == 0 {
			x.s.log.Error("backup reported an error", "code", e.Code, "message", e.Message)
			return nil // the backup closes the connection if it must
		}
		x.s.log.Warn("backup refused checkpoint", "epoch", f.Epoch, "code", e.Code, "message", e.Message)
		x.answer(Ack{Epoch: f.Epoch, At: time.Now(), Err: &NackError{Epoch: f.Epoch, Code: e.Code, Message: e.Message}})
	case wire.TypeLogAck:
		a, err := wire.DecodeLogAck(f.Payload)
		if err != nil {
			return err
		}
		x.mu.Lock()
		sent := x.logSent
		x.mu.Unlock()
		if sent.before(logPosition{f.Epoch, a.Index}) {
			return fmt.Errorf("backup acknowledged the input log up to %d.%d, beyond what was sent (%d.%d)", f.Epoch, a.Index, sent.epoch, sent.index)
		}
		if x.s.opts.OnLogAck != nil {
			x.s.opts.OnLogAck(f.Epoch, a.Index)
		}
	}
	return nil
}

func (x *Sender) answer(a Ack) {
	if a.Err != nil {
		x.baseStale.Store(true)
	}
	x.mu.Lock()
	delete(x.sent, a.Epoch)
	if a.Err == nil && a.Epoch > x.acked {
		x.acked = a.Epoch
	}
	x.answers[a.Epoch] = a
	for e := range x.answers { // answers nobody waited for
		if e+256 < a.Epoch {
			delete(x.answers, e)
		}
	}
	x.mu.Unlock()
	if a.Err == nil {
		x.s.log.Debug("checkpoint acknowledged", "epoch", a.Epoch)
	}
	// The callback runs before waiters wake, so that a waiter may rely on
	// it having seen the answer.
	if x.s.opts.OnAck != nil {
		x.s.opts.OnAck(a)
	}
	x.mu.Lock()
	close(x.changed)
	x.changed = make(chan struct{})
	x.mu.Unlock()
}

// failPending answers every checkpoint still awaiting an answer with the
// session's end.
func (x *Sender) failPending(err error) {
	x.mu.Lock()
	pending := make([]uint64, 0, len(x.sent))
	for e := range x.sent {
		pending = append(pending, e)
	}
	x.mu.Unlock()
	slices.Sort(pending)
	for _, e := range pending {
		x.answer(Ack{Epoch: e, At: time.Now(), Err: fmt.Errorf("connection to backup ended before checkpoint %d was acknowledged: %w", e, err)})
	}
}

// WaitAck waits for the backup's answer about epoch: nil once it is
// committed, a *NackError if it was refused, or the session's or ctx's end.
// For an epoch not in flight on this session, a later committed epoch
// counts (the backup commits in order). An aborted transfer is never
// answered: Send returned its error.
func (x *Sender) WaitAck(ctx context.Context, epoch uint64) error {
	for {
		x.mu.Lock()
		a, answered := x.answers[epoch]
		_, pending := x.sent[epoch]
		acked, changed := x.acked, x.changed
		if answered {
			delete(x.answers, epoch)
		}
		x.mu.Unlock()
		switch {
		case answered:
			return a.Err
		case !pending && acked >= epoch:
			return nil
		}
		if err := x.s.Err(); err != nil {
			return fmt.Errorf("waiting for the ack of checkpoint %d: %w", epoch, err)
		}
		select {
		case <-changed:
		case <-x.s.ctx.Done():
			// loop once more: failPending may have answered it
			select {
			case <-changed:
			case <-time.After(10 * time.Millisecond):
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// logPosition is a place in the input log: the checkpoint epoch the
// records follow and a record's index after it.
type logPosition struct{ epoch, index uint64 }

func (p logPosition) before(q logPosition) bool {
	return p.epoch < q.epoch || (p.epoch == q.epoch && p.index < q.index)
}

// SendLog queues a batch of the input log (hybrid mode): count records from
// index first after the checkpoint of epoch, encoded in data. Log frames go
// ahead of checkpoint chunks and behind control frames, or straight on the
// connection when nothing else is being written; SendLog does not wait for
// a queued write, and the backup acknowledges through OnLogAck. It must be
// called from one goroutine at a time: the log's order is its calls'.
func (x *Sender) SendLog(ctx context.Context, epoch, first uint64, count int, data []byte) error {
	if count < 1 || first == 0 {
		return fmt.Errorf("input log batch of %d records from index %d", count, first)
	}
	if len(data) > wire.MaxLogRecordData {
		return fmt.Errorf("input log batch of %d bytes exceeds %d", len(data), wire.MaxLogRecordData)
	}
	x.mu.Lock()
	x.logSent = logPosition{epoch, first + uint64(count) - 1}
	x.mu.Unlock()
	return x.s.sendLog(ctx, epoch, wire.LogRecord{Index: first, Data: data}.Append(nil))
}
