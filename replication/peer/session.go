// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iorrc/rrc/replication/wire"
)

// ErrClosed is the error of a session closed locally.
var ErrClosed = errors.New("peer connection closed")

// ErrConnectionLost wraps the end of a session that came from the peer's
// side or the network — EOF, a reset, a TLS error, a frame cut short —
// rather than from this side or a frame that broke the protocol. Without a
// Goodbye before it, that is how a primary whose host stays up fails.
var ErrConnectionLost = errors.New("connection to the peer lost")

// GoodbyeError ends a session whose peer said it stops on purpose.
type GoodbyeError struct {
	Reason  wire.GoodbyeReason
	Message string
}

func (e *GoodbyeError) Error() string {
	return fmt.Sprintf("the peer said goodbye (%s): %s", e.Reason, e.Message)
}

// outFrame is a frame queued for the writer. done, if set, receives the
// write's result.
type outFrame struct {
	typ     wire.Type
	epoch   uint64
	payload []byte
	done    chan error
}

// session is one authenticated connection after the TLS handshake: a single
// writer goroutine with three lanes (control, then the input log of hybrid
// mode, then bulk: output waits on the log's acks, so its frames never wait
// behind checkpoint chunks), a reader loop, the heartbeat ticker and the
// failure detector.
type session struct {
	opts  Options
	role  wire.Role // this side
	log   *slog.Logger
	conn  net.Conn     // the TLS connection
	tcp   *watchedConn // under it
	enc   wire.Encoder
	rd    *wire.Reader
	hello wire.Hello // the peer's
	// peerEpoch is the epoch in the peer's Hello: the backup's last
	// committed checkpoint, where the primary resumes.
	peerEpoch uint64

	control chan outFrame
	logLane chan outFrame
	bulk    chan outFrame
	// writeMu is held for each write to the connection (and each frame
	// sequence number): the writer goroutine's, and the direct writes that
	// spare a frame the hand-over to it when it is idle (writeDirect).
	writeMu   sync.Mutex
	directBuf []byte // guarded by writeMu
	// queuedLog counts log frames queued and not written yet: a log frame
	// is written directly only when none is, so the log stays in order.
	queuedLog atomic.Int64
	// saidGoodbye is set once a Goodbye is written: nothing may follow it
	// (guarded by writeMu).
	saidGoodbye bool
	// det watches the peer; set by run.
	det *FailureDetector

	latestEpoch  atomic.Uint64 // the epoch this side's heartbeats carry
	lastPeerSent atomic.Int64  // SentAt of the peer's last heartbeat, echoed back
	rtt          atomic.Int64

	// released is closed (by the Receiver) once the session no longer
	// touches the checkpoint store.
	released chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	closed    chan struct{} // closed once err is set
	closeOnce sync.Once
	mu        sync.Mutex
	err       error
	wg        sync.WaitGroup
}

func newSession(parent context.Context, opts Options, role wire.Role, conn net.Conn, tcp *watchedConn) *session {
	ctx, cancel := context.WithCancel(parent)
	pair := wire.PairIDOf(opts.Pair)
	peerRole := wire.RoleBackup
	if role == wire.RoleBackup {
		peerRole = wire.RolePrimary
	}
	s := &session{
		opts: opts, role: role, conn: conn, tcp: tcp, ctx: ctx, cancel: cancel,
		log:      opts.Logger.With("pair", opts.Pair, "role", role.String(), "peer", conn.RemoteAddr().String()),
		enc:      wire.Encoder{Pair: pair},
		rd:       wire.NewReader(conn, wire.ReaderOptions{MaxPayload: opts.MaxPayload, Pair: pair, PeerRole: peerRole}),
		control:  make(chan outFrame, 64),
		logLane:  make(chan outFrame, 64),
		bulk:     make(chan outFrame, 2),
		released: make(chan struct{}),
		closed:   make(chan struct{}),
	}
	// The owner's context ending closes the connection, which is what
	// unblocks the reader.
	context.AfterFunc(ctx, func() { s.close(fmt.Errorf("%w: %w", ErrClosed, context.Cause(ctx))) })
	return s
}

// handshake exchanges Hellos: each side sends its own first, then checks the
// peer's (pair, opposite role, mode, a common version). myEpoch is this
// side's resync point (see wire.Hello).
func (s *session) handshake(myEpoch uint64) error {
	s.wg.Add(1)
	go s.writeLoop()
	hello := wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version, Role: s.role, Mode: s.opts.Mode,
		Heartbeat: s.opts.Heartbeat, Pair: s.opts.Pair, Image: s.opts.Image}
	// Waited for: no frame written directly (writeDirect) may overtake it.
	if err := s.enqueue(s.ctx, s.control, wire.TypeHello, myEpoch, hello.Append(nil), true); err != nil {
		return fmt.Errorf("sending Hello: %w", err)
	}
	s.conn.SetReadDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	f, err := s.rd.Next()
	s.conn.SetReadDeadline(time.Time{})
	if err != nil {
		if isProtocolErr(err) {
			s.refuse(0, wire.CodeProtocol, "expected Hello: "+err.Error())
		} else {
			// Typically a TLS alert: with TLS 1.3 a client learns that the
			// server refused its certificate only here.
			s.log.Warn("peer refused the connection", "err", err)
		}
		return fmt.Errorf("reading the peer's Hello: %w", err)
	}
	h, err := wire.DecodeHello(f.Payload)
	if err != nil {
		s.refuse(0, wire.CodeProtocol, err.Error())
		return fmt.Errorf("reading the peer's Hello: %w", err)
	}
	code, problem := wire.ErrorCode(0), ""
	switch {
	case h.Pair != s.opts.Pair:
		code, problem = wire.CodePair, fmt.Sprintf("peer is for pair %q", h.Pair)
	case h.Role == s.role:
		code, problem = wire.CodePair, fmt.Sprintf("peer is also %s", h.Role)
	case h.Mode != s.opts.Mode:
		code, problem = wire.CodePair, fmt.Sprintf("peer runs %s mode, this side %s", h.Mode, s.opts.Mode)
	case h.Image != s.opts.Image:
		// A restore of the other's checkpoint onto another image would
		// run its memory against other files.
		code, problem = wire.CodePair, fmt.Sprintf("peer's container runs image %s, this side's %s: both must run the same image", orNone(h.Image), orNone(s.opts.Image))
	case wire.Version < h.MinVersion || wire.Version > h.MaxVersion:
		code, problem = wire.CodeVersion, fmt.Sprintf("peer speaks versions %d-%d, this side %d", h.MinVersion, h.MaxVersion, wire.Version)
	}
	if code != 0 {
		s.refuse(0, code, problem)
		return fmt.Errorf("refusing peer: %s", problem)
	}
	if bound := s.opts.Heartbeat * time.Duration(s.opts.HeartbeatMisses); h.Heartbeat > bound {
		// Its heartbeats could not keep this side's detector satisfied:
		// every silence between two would be a failure.
		problem = fmt.Sprintf("peer announces heartbeats every %s, longer than this side's failure detection bound %s (%s × %d)",
			h.Heartbeat, bound, s.opts.Heartbeat, s.opts.HeartbeatMisses)
		s.refuse(0, wire.CodePair, problem)
		return fmt.Errorf("refusing peer: %s", problem)
	}
	s.hello, s.peerEpoch = h, f.Epoch
	return nil
}

// detectionInterval is the heartbeat interval this side's failure detector
// counts misses of: the peer's announced interval, but never less than this
// side's own. The peer must not set how fast it is declared failed (an
// interval of a nanosecond would make every pause a failure) nor stretch it
// beyond this side's bound (the handshake refuses an interval longer than
// this side's whole timeout).
func (s *session) detectionInterval() time.Duration {
	return max(s.hello.Heartbeat, s.opts.Heartbeat)
}

// run starts heartbeats and the failure detector, and reads frames into
// handle until the connection ends. handle runs on the reader goroutine.
func (s *session) run(handle func(wire.Frame) error) error {
	det := NewFailureDetector(s.detectionInterval(), s.opts.HeartbeatMisses, s.tcp)
	s.det = det
	s.wg.Add(2)
	go s.heartbeatLoop()
	go func() {
		defer s.wg.Done()
		if f, ok := det.Run(s.ctx); ok {
			f.Pair = s.opts.Pair
			s.log.Error("peer failed", "last_heard", f.LastHeard, "detected_at", f.DetectedAt, "timeout", f.Timeout, "reason", f.Reason)
			if s.opts.OnPeerFailed != nil {
				s.opts.OnPeerFailed(f)
			}
			if s.role == wire.RolePrimary {
				// The primary gives up on this backup and runs on without
				// it: a backup that still hears it must not take over.
				if err := s.sayGoodbye(wire.GoodbyeDegraded, "the primary declared this backup failed: "+f.Reason); err != nil {
					s.log.Warn("the backup was not told that this primary gives up on it", "err", err)
				}
			}
			s.close(fmt.Errorf("peer failed: %s", f.Reason))
		}
	}()
	for {
		f, err := s.rd.Next()
		if err != nil {
			if s.ctx.Err() == nil {
				switch {
				case errors.Is(err, io.EOF):
					err = fmt.Errorf("%w: peer closed the connection: %w", ErrConnectionLost, err)
				case isProtocolErr(err):
					s.refuse(0, wire.CodeProtocol, err.Error())
				default: // a reset, a TLS error, a frame cut short
					err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
				}
			}
			s.close(err)
			return s.Err()
		}
		det.Observe(time.Now())
		if h := s.opts.hooks; h != nil && h.frameIn != nil {
			h.frameIn(f)
		}
		if f.Type == wire.TypeHeartbeat {
			s.onHeartbeat(f)
			continue
		}
		if err := handle(f); err != nil {
			s.close(err)
			return s.Err()
		}
	}
}

// isProtocolErr reports a frame that broke the protocol (as opposed to a
// connection that broke): worth telling the peer before closing.
func isProtocolErr(err error) bool {
	for _, e := range []error{wire.ErrBadMagic, wire.ErrBadVersion, wire.ErrUnknownType, wire.ErrBadFlags,
		wire.ErrPayloadTooLarge, wire.ErrChecksum, wire.ErrSequence, wire.ErrEpochOrder, wire.ErrUnexpectedFrame,
		wire.ErrPairMismatch, wire.ErrMalformed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *session) onHeartbeat(f wire.Frame) {
	hb, err := wire.DecodeHeartbeat(f.Payload)
	if err != nil {
		s.log.Warn("ignoring malformed heartbeat", "err", err)
		return
	}
	s.lastPeerSent.Store(hb.SentAt.UnixNano())
	if !hb.Echo.IsZero() {
		s.rtt.Store(int64(time.Since(hb.Echo)))
	}
}

func (s *session) heartbeatLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			hb := wire.Heartbeat{SentAt: now}
			if echo := s.lastPeerSent.Load(); echo != 0 {
				hb.Echo = time.Unix(0, echo)
			}
			// Never block the ticker on a full control lane: a heartbeat
			// that cannot be queued now is stale anyway.
			select {
			case s.control <- outFrame{typ: wire.TypeHeartbeat, epoch: s.latestEpoch.Load(), payload: hb.Append(nil)}:
			default:
				s.log.Warn("control lane full; heartbeat skipped")
			}
		}
	}
}

// writeLoop owns the connection's write side and the frame sequence.
func (s *session) writeLoop() {
	defer s.wg.Done()
	var buf []byte
	for {
		var f outFrame
		select {
		case f = <-s.control:
		default:
			select {
			case f = <-s.control:
			case f = <-s.logLane:
			default:
				select {
				case f = <-s.control:
				case f = <-s.logLane:
				case f = <-s.bulk:
				case <-s.ctx.Done():
					return
				}
			}
		}
		s.writeMu.Lock()
		var err error
		buf, err = s.writeFrame(buf, f)
		s.writeMu.Unlock()
		if f.typ == wire.TypeLogRecord {
			s.queuedLog.Add(-1)
		}
		if f.done != nil {
			f.done <- err
		}
		if errors.Is(err, errAfterGoodbye) {
			continue // dropped: the session is ending
		}
		if err != nil {
			s.writeFailed(f.typ, err)
			return
		}
	}
}

// writeFailed ends the session after a failed write: the connection is
// lost, unless this side ended it.
func (s *session) writeFailed(t wire.Type, err error) {
	if errors.Is(err, errAfterGoodbye) {
		return // whoever said it ends the session, with its own reason
	}
	if errors.Is(err, ErrClosed) {
		s.close(err)
		return
	}
	s.close(fmt.Errorf("%w: writing %s: %w", ErrConnectionLost, t, err))
}

// errAfterGoodbye refuses a frame after this side's Goodbye.
var errAfterGoodbye = fmt.Errorf("%w: this side said goodbye", ErrClosed)

// writeFrame encodes f into buf and writes it; the caller holds writeMu.
func (s *session) writeFrame(buf []byte, f outFrame) ([]byte, error) {
	if s.saidGoodbye {
		return buf, errAfterGoodbye
	}
	s.saidGoodbye = f.typ == wire.TypeGoodbye
	buf = s.enc.Append(buf[:0], f.typ, f.epoch, f.payload)
	if h := s.opts.hooks; h != nil && h.frame != nil {
		h.frame(f.typ, buf)
	}
	if h := s.opts.hooks; h != nil && h.silence.Load() {
		return buf, nil
	}
	_, err := s.conn.Write(buf)
	return buf, err
}

// writeDirect writes a frame on the caller's goroutine if no write is in
// progress (a frame of the log or an acknowledgement of it is on the
// critical path of every reply); ok is false if it did not, and the caller
// queues the frame instead.
func (s *session) writeDirect(t wire.Type, epoch uint64, payload []byte) (ok bool, err error) {
	if !s.writeMu.TryLock() {
		return false, nil
	}
	defer s.writeMu.Unlock()
	if s.ctx.Err() != nil {
		return true, s.Err()
	}
	s.directBuf, err = s.writeFrame(s.directBuf, outFrame{typ: t, epoch: epoch, payload: payload})
	if err != nil {
		s.writeFailed(t, err)
	}
	return true, err
}

// sendLog writes a log frame directly if none is queued and no write is in
// progress, or queues it.
func (s *session) sendLog(ctx context.Context, epoch uint64, payload []byte) error {
	if s.queuedLog.Load() == 0 {
		if ok, err := s.writeDirect(wire.TypeLogRecord, epoch, payload); ok {
			return err
		}
	}
	s.queuedLog.Add(1)
	if err := s.enqueue(ctx, s.logLane, wire.TypeLogRecord, epoch, payload, false); err != nil {
		s.queuedLog.Add(-1)
		return err
	}
	return nil
}

// enqueue queues a frame on a lane; with wait it also waits for the write.
func (s *session) enqueue(ctx context.Context, lane chan outFrame, t wire.Type, epoch uint64, payload []byte, wait bool) error {
	f := outFrame{typ: t, epoch: epoch, payload: payload}
	if wait {
		f.done = make(chan error, 1)
	}
	select {
	case lane <- f:
	case <-s.ctx.Done():
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
	if !wait {
		return nil
	}
	select {
	case err := <-f.done:
		return err
	case <-s.ctx.Done():
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// replyNow writes a control frame from the reader goroutine directly if no
// write is in progress, or queues it (for frames whose order among the
// control frames does not matter: cumulative acknowledgements).
func (s *session) replyNow(t wire.Type, epoch uint64, payload []byte) {
	if ok, err := s.writeDirect(t, epoch, payload); ok {
		if err != nil {
			s.log.Debug("reply not sent", "type", t, "err", err)
		}
		return
	}
	s.reply(t, epoch, payload)
}

// reply queues a control frame from the reader goroutine.
func (s *session) reply(t wire.Type, epoch uint64, payload []byte) {
	if err := s.enqueue(s.ctx, s.control, t, epoch, payload, false); err != nil {
		s.log.Debug("reply not sent", "type", t, "err", err)
	}
}

// refuse tells the peer why (best effort, briefly) before the caller closes.
func (s *session) refuse(epoch uint64, code wire.ErrorCode, msg string) {
	s.log.Warn("refusing", "code", code, "epoch", epoch, "reason", msg)
	s.tell(epoch, code, msg, time.Second)
}

// sayGoodbye writes a Goodbye, after which nothing more is written; the
// caller then ends the session. It writes on the caller's goroutine, so
// that its result is the write's, whatever the reader sees next (the peer
// closes as soon as it reads it), and gives the write goodbyeTimeout: a
// peer that is gone takes it at once or never, and a write stuck behind a
// peer that stopped reading gives up with it.
func (s *session) sayGoodbye(reason wire.GoodbyeReason, message string) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(goodbyeTimeout)); err != nil {
		return fmt.Errorf("saying goodbye to the peer: %w", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.ctx.Err() != nil {
		return fmt.Errorf("saying goodbye to the peer: %w", s.Err())
	}
	var err error
	s.directBuf, err = s.writeFrame(s.directBuf, outFrame{typ: wire.TypeGoodbye, epoch: s.latestEpoch.Load(),
		payload: wire.Goodbye{Reason: reason, Message: message}.Append(nil)})
	if err != nil {
		s.writeFailed(wire.TypeGoodbye, err)
		return fmt.Errorf("saying goodbye to the peer: %w", err)
	}
	s.log.Info("said goodbye to the peer", "reason", reason, "message", message)
	return nil
}

const goodbyeTimeout = 200 * time.Millisecond

// tell sends an Error (epoch 0: about the whole connection) and waits for
// its write at most timeout.
func (s *session) tell(epoch uint64, code wire.ErrorCode, msg string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if err := s.enqueue(ctx, s.control, wire.TypeError, epoch, wire.Error{Code: code, Message: msg}.Append(nil), true); err != nil {
		s.log.Warn("could not tell the peer", "code", code, "message", msg, "err", err)
	}
}

// close ends the session with err (the first error wins) and closes the
// connection, which unblocks the reader and the writer.
func (s *session) close(err error) {
	s.closeOnce.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.closed)
		s.cancel()
		s.conn.Close()
		if !errors.Is(err, ErrClosed) {
			s.log.Info("connection ended", "err", err)
		}
	})
}

// Err is why the session ended, nil while it runs.
func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// shutdown closes the session and waits for its goroutines.
func (s *session) shutdown() {
	s.close(ErrClosed)
	s.wg.Wait()
}

// tlsHandshake runs the TLS handshake with a timeout; failures are logged
// with the pair: an unauthenticated or wrong peer is refused here.
func tlsHandshake(ctx context.Context, conn *tls.Conn, opts Options, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		log.Warn("peer refused: TLS handshake failed", "pair", opts.Pair, "peer", conn.RemoteAddr().String(),
			"expected_peer", opts.PeerName, "err", err)
		conn.Close()
		return fmt.Errorf("TLS handshake with %s: %w", conn.RemoteAddr(), err)
	}
	st := conn.ConnectionState()
	if len(st.PeerCertificates) > 0 {
		log.Info("peer authenticated", "pair", opts.Pair, "peer", conn.RemoteAddr().String(),
			"subject", st.PeerCertificates[0].Subject.CommonName, "tls", tls.VersionName(st.Version))
	}
	return nil
}

func orNone(image string) string {
	if image == "" {
		return "(none: a root file system of its own)"
	}
	return image
}
