// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/hybridlog"
	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/peertls"
)

// BackupOptions is what the backup's engine needs.
type BackupOptions struct {
	Config Config // Role backup; Pair, Listen and PeerName set
	TLS    *peertls.Credentials
	// StoreDir is the checkpoint store of the pair (ckptstore layout).
	StoreDir string
	// DurableStore fsyncs each checkpoint before it is acknowledged
	// (ckptstore.Options.Durable).
	DurableStore bool
	// Listener replaces listening on Config.Listen (tests).
	Listener net.Listener
	// Restorer restores the last committed checkpoint at promotion.
	Restorer Restorer
	// Network takes over the service address after the restore.
	Network ServicePromoter
	Logger  *slog.Logger
	// OnTransition: as PrimaryOptions.OnTransition.
	OnTransition func(Transition)
	// Fence, if set, is the pair's ownership in a witness: the backup
	// promotes only once it owns the pair (backup_fence.go); nil leaves
	// the pair unfenced.
	Fence Fence
}

// Backup holds the primary's last committed checkpoint and, when the
// primary fails (heartbeats missed), promotes: it restores that checkpoint
// into the standby service network namespace and brings the service
// address up. From then on the restored container is the service.
type Backup struct {
	opts  BackupOptions
	cfg   Config
	log   *slog.Logger
	store *ckptstore.Store
	recv  *peer.Receiver
	now   clock

	cancelServe context.CancelFunc
	serveDone   chan struct{}
	serveErr    error
	promoteOnce sync.Once
	promoted    chan struct{} // closed when promotion has ended (success or not)

	mu       sync.Mutex
	sm       stateMachine // guarded by mu
	conns    uint64       // primary connections so far: a lost one's wait is for its own
	lostWait *time.Timer  // the wait of primary-lost, stopped by Close
	// stopFencing ends a wait for the pair's ownership (the primary
	// reconnected, or Close); nil when none runs.
	stopFencing context.CancelFunc
	commits     uint64
	bytes       window
	failover    *FailoverTimings
	restored    *RestoredContainer
	// inputLog is hybrid mode's log after the committed checkpoint, for
	// this connection (nil in epoch mode).
	inputLog *hybridlog.Store
}

// StartBackup opens the store, listens and serves the primary until Close
// or a promotion.
func StartBackup(ctx context.Context, opts BackupOptions) (*Backup, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("backup engine: %w", err)
	}
	if cfg.Role != RoleBackup || cfg.Pair == "" {
		return nil, fmt.Errorf("backup engine: needs role backup and a pair name (got %q, %q)", cfg.Role, cfg.Pair)
	}
	if opts.Restorer == nil || opts.Network == nil || opts.StoreDir == "" || opts.TLS == nil {
		return nil, errors.New("backup engine: store dir, TLS credentials, restorer and service network are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b := &Backup{opts: opts, cfg: cfg, now: time.Now, sm: newStateMachine(backupTransitions(), time.Now),
		log: opts.Logger.With("pair", cfg.Pair, "role", "backup"), promoted: make(chan struct{}), serveDone: make(chan struct{})}
	b.sm.notify = transitionNotifier(opts.OnTransition, cfg.Pair, RoleBackup)
	store, err := ckptstore.Open(opts.StoreDir, ckptstore.Options{Logger: b.log, Durable: opts.DurableStore})
	if err != nil {
		return nil, fmt.Errorf("backup engine: %w", err)
	}
	b.store = store
	popts := peer.Options{
		Pair: cfg.Pair, PeerName: cfg.PeerName, Mode: cfg.Mode.wire(), Image: cfg.Image,
		Heartbeat: cfg.Heartbeat, HeartbeatMisses: cfg.HeartbeatMisses, Logger: opts.Logger,
		OnCommit:       b.onCommit,
		OnPeerFailed:   b.onPeerFailed,
		OnConnected:    b.onConnected,
		OnDisconnected: b.onDisconnected,
	}
	if cfg.Mode == ModeHybrid {
		popts.OnLog = b.onLog
	}
	recv, err := peer.NewReceiver(store, opts.TLS, popts)
	if err != nil {
		return nil, fmt.Errorf("backup engine: %w", err)
	}
	b.recv = recv
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("backup engine: listening on %s: %w", cfg.Listen, err)
		}
	}
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancelServe = cancel
	go func() {
		defer close(b.serveDone)
		if err := recv.Serve(serveCtx, ln); err != nil {
			b.log.Error("serving the primary", "err", err)
			b.serveErr = err
		}
	}()
	b.log.Info("backup ready", "listen", ln.Addr().String(), "committed", store.CurrentEpoch())
	return b, nil
}

// The backup is in sync only once it has committed a checkpoint on the
// current connection. A primary that lost its backup ran on unreplicated
// (its output went out without a checkpoint behind it), so a checkpoint
// from an earlier connection may be contradicted by what clients were
// told: it is never promoted. Until the reconnected primary's first
// checkpoint is committed, a failure of the primary is reported, not acted
// on (fail closed).

func (b *Backup) onConnected() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conns++
	if b.sm.state == StatePrimaryLost {
		b.log.Info("the lost primary reconnected within the detection bound: not promoting")
	}
	if b.sm.state == StateFencing {
		b.log.Info("the primary reconnected while this backup waited for the pair's ownership: not promoting")
		b.stopFencing()
	}
	if b.sm.to(StateSyncing, "") && b.cfg.Mode == ModeHybrid { // from starting, in-sync, disconnected or fencing
		b.inputLog = hybridlog.NewStore(b.store.CurrentEpoch())
	}
}

// onDisconnected decides what the end of a connection means. A goodbye,
// or an end this side made, is not a failure: the backup waits for the
// primary (disconnected). A connection lost without a goodbye while in
// sync is how a primary on a live host fails (its shim killed, crashed or
// out of memory: the kernel closes its socket), but also what a reset on
// the path looks like while the primary lives. So it is treated like
// silence: the primary is declared failed once nothing has come from it
// for the detector's bound, counted from its last frame, unless it has
// reconnected by then (docs/ENGINE.md, "Failure detection").
func (b *Backup) onDisconnected(d peer.Disconnect) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case d.Goodbye != nil:
		if b.sm.state == StateFencing { // it stopped on purpose after all
			b.stopFencing()
		}
		if b.sm.to(StateDisconnected, fmt.Sprintf("the primary said goodbye (%s: %s): it stopped replicating on purpose; the checkpoint held is not promoted until the primary reconnects and a new one is committed",
			d.Goodbye.Reason, d.Goodbye.Message)) {
			b.log.Info("primary said goodbye; not promoting, waiting for it to reconnect", "reason", d.Goodbye.Reason, "message", d.Goodbye.Message)
		}
	case d.Lost && b.sm.state == StateInSync:
		deadline := d.LastHeard.Add(d.Timeout)
		b.sm.to(StatePrimaryLost, fmt.Sprintf("the connection ended without a goodbye (%v); promoting at %s unless the primary reconnects (nothing heard since %s, detection bound %s)",
			d.Err, deadline.UTC().Format(time.RFC3339Nano), d.LastHeard.UTC().Format(time.RFC3339Nano), d.Timeout))
		b.log.Warn("primary connection ended without a goodbye: the primary is declared failed unless it reconnects within the detection bound",
			"err", d.Err, "last_heard", d.LastHeard, "timeout", d.Timeout, "deadline", deadline)
		gen := b.conns
		b.lostWait = time.AfterFunc(max(deadline.Sub(b.now()), 0), func() { b.primaryLost(gen, d) })
	case b.sm.state == StateFencing:
		// The failed primary's connection ends: the wait for the
		// ownership goes on.
	default:
		if b.sm.to(StateDisconnected, fmt.Sprintf("primary disconnected (%v): not protected; the checkpoint held is not promoted until the primary reconnects and a new one is committed", d.Err)) {
			b.log.Warn("primary disconnected; waiting for it to reconnect", "err", d.Err)
		}
		// else promoting, promoted, failed or closed: nothing to say
	}
}

// primaryLost runs when the bound after a connection lost without a
// goodbye has passed: the primary is declared failed unless it has
// reconnected since (another connection) or the backup was closed.
func (b *Backup) primaryLost(gen uint64, d peer.Disconnect) {
	now := b.now()
	f := peer.PeerFailure{Pair: b.cfg.Pair, LastHeard: d.LastHeard, DetectedAt: now, Timeout: d.Timeout,
		Reason: fmt.Sprintf("the connection ended without a goodbye (%v) and nothing came from the primary for %s",
			d.Err, now.Sub(d.LastHeard).Round(time.Millisecond))}
	b.mu.Lock()
	if b.conns != gen || b.sm.state != StatePrimaryLost || !b.sm.to(b.declaredFailedState(), f.Reason) {
		b.mu.Unlock()
		return
	}
	if b.fenceLocked(f) {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.log.Error("primary failed: its connection ended without a goodbye and it did not come back within the detection bound; promoting",
		"last_heard", f.LastHeard, "timeout", f.Timeout, "err", d.Err)
	go b.promote(f, 0)
}

func (b *Backup) onCommit(c ckptstore.Checkpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commits++
	b.bytes.add(float64(c.Size))
	if b.inputLog != nil {
		b.inputLog.Committed(c.Epoch)
	}
	if b.sm.to(StateInSync, "") { // only from syncing
		b.log.Info("checkpoint committed on this connection: in sync", "epoch", c.Epoch, "bytes", c.Size)
	}
}

// onPeerFailed decides, on the detector's goroutine and before the
// connection is closed, whether to promote.
func (b *Backup) onPeerFailed(f peer.PeerFailure) {
	b.mu.Lock()
	if !b.sm.to(b.declaredFailedState(), f.Reason) { // only from in-sync
		b.log.Error("primary failed before this backup was in sync with it: nothing consistent to take over; not promoting",
			"state", b.sm.state, "last_heard", f.LastHeard, "reason", f.Reason)
		if b.sm.state == StateSyncing {
			b.sm.to(StateDisconnected, "primary failed before its first checkpoint on this connection was committed: "+f.Reason)
		}
		b.mu.Unlock()
		return
	}
	if b.fenceLocked(f) {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	// Fencing, as far as the channel allows: a primary that was only
	// silent and reads this stops instead of serving next to us.
	b.recv.Supersede("the backup declared the primary failed (" + f.Reason + ") and promotes its last checkpoint")
	go b.promote(f, 0)
}

// promote runs once, when the primary has been declared failed while in
// sync (state already promoting).
func (b *Backup) promote(f peer.PeerFailure, fenced time.Duration) {
	b.promoteOnce.Do(func() {
		defer close(b.promoted)
		// Promotion must not be cut short by whoever started the backup:
		// a half-restored service is worse than a slow one.
		ctx := context.Background()
		p := promotion{
			log: b.log, now: b.now,
			stopReceiving: func() {
				b.cancelServe()
				<-b.serveDone
			},
			current:  b.store.Current,
			restorer: b.opts.Restorer,
			network:  b.opts.Network,
			fenceMS:  ms(fenced),
		}
		if b.cfg.Mode == ModeHybrid {
			// Output beyond the checkpoint was released on the log: the
			// checkpoint alone would contradict it; the log is replayed.
			b.mu.Lock()
			l := b.inputLog
			b.mu.Unlock()
			p.inputLog = func(uint64) ([]hybridlog.Entry, error) { return nil, nil }
			if l != nil {
				p.inputLog = l.After
			}
		}
		res, tm, err := p.run(ctx, f)
		b.mu.Lock()
		defer b.mu.Unlock()
		b.failover = &tm
		if err != nil {
			b.sm.to(StateFailed, err.Error())
			return
		}
		b.sm.to(StatePrimaryAfterFailover, "took over: the primary failed: "+f.Reason)
		b.restored = &res
	})
}

// Promoted is closed when a promotion has ended; Status says how.
func (b *Backup) Promoted() <-chan struct{} { return b.promoted }

// Restored is the container restored by the promotion, if it succeeded:
// the shim adopts its pid as the task's init.
func (b *Backup) Restored() (RestoredContainer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.restored == nil {
		return RestoredContainer{}, false
	}
	return *b.restored, true
}

// Status returns a snapshot.
func (b *Backup) Status() Status {
	cur, ok := b.store.Current()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Status{Pair: b.cfg.Pair, Role: RoleBackup, Mode: b.cfg.Mode, Log: b.logStatusLocked(), State: b.sm.state, StateSince: b.sm.since, StateSeconds: b.sm.seconds(), Reason: b.sm.reason,
		Epochs: b.commits, BytesPerEpoch: b.bytes.summary(), Failover: b.failover, Restored: b.restored, Fence: b.fenceStatus()}
	if ok {
		s.Epoch, s.CommittedEpoch, s.LastCommitAt = cur.Epoch, cur.Epoch, cur.CommittedAt
		switch b.sm.state {
		case StateStarting, StateSyncing, StateInSync, StatePrimaryLost, StateDisconnected:
			s.LagMS = ms(b.now().Sub(cur.CommittedAt))
		}
	}
	return s
}

// Close stops receiving. It does not touch a restored container: after a
// promotion that is the service, owned by the shim. A promotion in
// progress is waited for (within ctx).
func (b *Backup) Close(ctx context.Context) error {
	b.cancelServe()
	var err error
	select {
	case <-b.serveDone:
	case <-ctx.Done():
		err = fmt.Errorf("closing backup engine: %w", ctx.Err())
	}
	b.mu.Lock()
	promoting := b.sm.state == StatePromoting
	b.sm.to(StateClosed, "") // not after a promotion began: that is the service now
	if b.lostWait != nil {
		b.lostWait.Stop()
	}
	if b.stopFencing != nil {
		b.stopFencing()
	}
	b.mu.Unlock()
	if promoting {
		select {
		case <-b.promoted:
		case <-ctx.Done():
			err = fmt.Errorf("closing backup engine during promotion: %w", ctx.Err())
		}
	}
	b.log.Info("backup engine closed")
	return err
}

// onLog takes a batch of the input log (hybrid mode) on the reader
// goroutine and says how far the log is held.
func (b *Backup) onLog(epoch, first uint64, data []byte) (uint64, uint64, error) {
	b.mu.Lock()
	l := b.inputLog
	b.mu.Unlock()
	if l == nil {
		return 0, 0, errors.New("input log before the connection was set up")
	}
	held, err := l.Append(hybridlog.Position{Epoch: epoch, Index: first}, data)
	return held.Epoch, held.Index, err
}

func (b *Backup) logStatusLocked() *LogStatus {
	if b.inputLog == nil {
		return nil
	}
	st := b.inputLog.Stats()
	return &LogStatus{Records: uint64(st.Records), Bytes: uint64(st.Bytes), Acked: st.Held.String()}
}
