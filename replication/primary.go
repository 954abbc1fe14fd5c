// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/wire"
)

// PrimaryOptions is what the primary's engine needs besides the container.
type PrimaryOptions struct {
	Config Config // Role primary; Pair set
	// TLS is used by the default Dial (peer.Dial to Config.Peer).
	TLS *peertls.Credentials
	// Packets gates the container's traffic (NetfilterPath: a
	// netfilter.Path in its gate namespace or its own).
	Packets PacketPath
	// WorkDir receives one image directory per epoch, removed once sent.
	// It should be a tmpfs: the page copy is then a memory copy.
	WorkDir string
	Logger  *slog.Logger
	// Dial replaces peer.Dial (tests).
	Dial DialFunc
	// OnTransition, if set, is told of every change of state (see
	// Transition): in order, with the engine's lock held, so it must not
	// block or call back into the engine.
	OnTransition func(Transition)
	// Fence, if set, is the pair's ownership in a witness: output is
	// released only while it is held (fence.go, docs/FENCING.md); nil
	// leaves the pair unfenced.
	Fence Fence
}

// Primary replicates one container: every epoch it checkpoints the
// container and sends the checkpoint to the backup. In epoch mode the
// output of an epoch is released only once the backup has acknowledged that
// epoch's checkpoint (invariant 1 of docs/ARCHITECTURE.md; docs/ENGINE.md); in hybrid mode once the
// backup holds the input log up to it (hybrid.go, docs/HYBRID.md).
type Primary struct {
	opts    PrimaryOptions
	cfg     Config
	log     *slog.Logger
	now     clock
	gate    OutputGate
	input   InputHold
	packets PacketPath
	hybrid  *hybrid     // hybrid mode, else nil
	fence   Fence       // nil: unfenced
	fgate   *fencedGate // gate under the fence, nil when unfenced

	mu         sync.Mutex
	sm         stateMachine // guarded by mu
	ck         Checkpointer
	sender     CheckpointSender
	offset     uint64                     // wire epoch = gate epoch + offset (the backup may hold epochs already)
	taken      map[uint64]takenCheckpoint // wire epoch → its checkpoint, until answered
	epoch      uint64                     // newest wire epoch checkpointed
	acked      uint64                     // newest wire epoch acknowledged
	ackedTaken time.Time                  // when that checkpoint was taken
	ackedAt    time.Time
	answeredAt time.Time // the backup's last answer (ack or nack) on this connection
	epochs     uint64
	skipped    uint64
	idle       uint64 // ticks without a checkpoint: nothing in or out since the last (SkipIdle)
	// sealedPackets: the packets that had entered or left the container
	// when the newest checkpoint was sealed.
	sealedPackets uint64
	deferred      uint64
	failed        uint64
	nacks         uint64
	// The current run of failed or refused checkpoints (none acknowledged
	// since): its length, when it began and the newest error.
	streak      uint64
	streakSince time.Time
	lastFailure string
	repairs     uint64 // times replication resumed after degraded
	redials     uint64 // times a lost connection was replaced at once, without degraded
	repairing   string // what re-pairing is doing, or why its last attempt failed
	// marked: the degraded mark is in the witness (cleared once in sync
	// again).
	marked bool
	// unrecorded: degraded with its output held, as the witness did not
	// record the degraded run (re-pairing tries again).
	unrecorded bool
	pause      timings
	hold       timings // input held per epoch
	bytes      window
	sentBytes  window // checkpoint content sent over the wire (the rest was copied from the base)
	memCopied  window // memory CRIU copied inside the pause
	ackLat     timings
	recent     []EpochFigures // the newest acknowledged checkpoints, at most recentEpochs

	peerFailed chan string   // reasons to degrade, from callbacks (never block)
	kick       chan struct{} // checkpoint now instead of at the next tick
	cancel     context.CancelFunc
	loopCtx    context.Context // the replication loop's lifetime, once started
	done       chan struct{}   // closed when the loop has ended
	closeOnce  sync.Once
	closeErr   error
}

// NewPrimary gates the container's traffic: after it returns, every packet
// the container sends is held until released by an acknowledged epoch, so
// call it before the container starts (after runc create, before runc
// start). Then Start replicates it.
func NewPrimary(ctx context.Context, opts PrimaryOptions) (*Primary, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("primary engine: %w", err)
	}
	if cfg.Role != RolePrimary || cfg.Pair == "" {
		return nil, fmt.Errorf("primary engine: needs role primary and a pair name (got %q, %q)", cfg.Role, cfg.Pair)
	}
	if opts.Packets == nil || opts.WorkDir == "" {
		return nil, errors.New("primary engine: packet path and work dir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Dial == nil {
		if opts.TLS == nil {
			return nil, errors.New("primary engine: peer TLS credentials are required")
		}
		opts.Dial = tlsDialer(cfg.Peer, opts.TLS)
	}
	p := &Primary{
		opts: opts, cfg: cfg, now: time.Now, packets: opts.Packets, sm: newStateMachine(primaryTransitions(), time.Now),
		log:        opts.Logger.With("pair", cfg.Pair, "role", "primary"),
		taken:      map[uint64]takenCheckpoint{},
		peerFailed: make(chan string, 1),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	p.sm.notify = transitionNotifier(opts.OnTransition, cfg.Pair, RolePrimary)
	if err := os.MkdirAll(opts.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("primary engine: work dir: %w", err)
	}
	var hooks PacketHooks
	if cfg.Mode == ModeHybrid {
		p.hybrid = newHybrid()
		hooks = p.hybridHooks()
	}
	gate, input, err := opts.Packets.Open(ctx, hooks)
	if err != nil {
		return nil, fmt.Errorf("primary engine: gating the container's traffic: %w", err)
	}
	p.gate, p.input = gate, input
	if opts.Fence != nil {
		p.fence = opts.Fence
		p.fgate = newFencedGate(gate, opts.Fence, p.log, p.now)
		p.gate = p.fgate
	}
	p.log.Info("container traffic gated: output held until acknowledged")
	return p, nil
}

func tlsDialer(addr string, creds *peertls.Credentials) DialFunc {
	return func(ctx context.Context, opts peer.Options) (CheckpointSender, error) {
		return peer.Dial(ctx, addr, creds, opts)
	}
}

// Start connects to the backup and starts the epoch loop with ck, the
// container's checkpointer (the container must be running). The first
// epoch is checkpointed at once: the initial full checkpoint. Start returns
// once the loop runs; Status says when the backup is in sync.
func (p *Primary) Start(ctx context.Context, ck Checkpointer) error {
	// ctx bounds the dial, not the connection, which lives as long as the
	// loop: ended with ctx, it would close without a goodbye, and the
	// backup would take over a container stopped on purpose.
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if p.fence != nil {
		// Before any output can be released: the other side must not own
		// the pair (a backup that took over is the service).
		if _, err := p.fence.Acquire(ctx, false); err != nil {
			cancel()
			return fmt.Errorf("primary engine: taking the pair's ownership in the witness: %w", err)
		}
		go p.fgate.watch(loopCtx)
		go p.watchFence(loopCtx)
	}
	stopDial := context.AfterFunc(ctx, cancel)
	sender, err := p.opts.Dial(loopCtx, p.peerOptions())
	if !stopDial() && err == nil {
		sender.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		if ferr := p.releaseFence(ctx); ferr != nil {
			p.log.Warn("the pair's ownership was not given up; it lapses with its lease", "err", ferr)
		}
		return fmt.Errorf("primary engine: connecting to backup %s: %w", p.cfg.Peer, err)
	}
	p.mu.Lock()
	if !p.sm.to(StateSyncing, "") { // stopped meanwhile
		state := p.sm.state
		p.mu.Unlock()
		sender.Close()
		cancel()
		return fmt.Errorf("primary engine: %s before it started", state)
	}
	p.ck, p.sender, p.cancel, p.loopCtx = ck, sender, cancel, loopCtx
	// The gate numbers epochs from 1; the backup may already hold some
	// (a restarted primary): wire epochs continue above them.
	p.offset = sender.BackupCommitted()
	if p.hybrid != nil {
		p.hybrid.restart(p.offset) // the gate's epoch 1 is open
	}
	p.mu.Unlock()
	p.log.Info("replicating", "mode", p.cfg.Mode, "epoch", p.cfg.Epoch, "backup", p.cfg.Peer, "backup_committed", p.offset)
	if p.hybrid != nil {
		go p.pumpLog(loopCtx)
	}
	go p.loop(loopCtx, true)
	return nil
}

// StartUnprotected starts the epoch loop with ck for a container that
// already serves without a backup, such as one restored at a failover: its
// output is released at once (degraded, for reason) and the primary pairs
// with the backup at Config.Peer in the background, as it re-pairs after
// losing one: from that connection on, output is held until the full
// checkpoint that follows is acknowledged (one checkpoint's pause).
func (p *Primary) StartUnprotected(ctx context.Context, ck Checkpointer, reason string) error {
	if p.fence != nil {
		return errors.New("primary engine: a container that serves unprotected cannot take a backup under a witness yet: the new primary would need the pair's ownership, which the promotion holds")
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.mu.Lock()
	if p.sm.state != StateStarting || !p.sm.to(StateDegraded, reason) {
		state := p.sm.state
		p.mu.Unlock()
		cancel()
		return fmt.Errorf("primary engine: %s, not starting", state)
	}
	p.ck, p.cancel, p.loopCtx = ck, cancel, loopCtx
	p.mu.Unlock()
	if err := p.gate.ReleaseAll(); err != nil {
		cancel()
		return fmt.Errorf("primary engine: releasing the output of a container that serves unprotected: %w", err)
	}
	p.log.Warn("serving unprotected until the backup is in sync; pairing with it in the background", "backup", p.cfg.Peer, "reason", reason)
	if p.hybrid != nil {
		go p.pumpLog(loopCtx)
	}
	go p.loop(loopCtx, false)
	return nil
}

// peerOptions are the settings of every connection to the backup.
func (p *Primary) peerOptions() peer.Options {
	o := peer.Options{
		Pair: p.cfg.Pair, PeerName: p.cfg.ExpectedPeerName(), Mode: p.cfg.Mode.wire(), Image: p.cfg.Image,
		Heartbeat: p.cfg.Heartbeat, HeartbeatMisses: p.cfg.HeartbeatMisses, Logger: p.opts.Logger,
		OnAck: p.onAck,
		OnPeerFailed: func(f peer.PeerFailure) {
			p.degradeLater(fmt.Sprintf("backup failed: %s (last heard %s ago)", f.Reason, f.DetectedAt.Sub(f.LastHeard).Round(time.Millisecond)))
		},
		OnSuperseded: p.superseded,
	}
	if p.hybrid != nil {
		o.OnLogAck = p.onLogAck
	}
	return o
}

// superseded: the backup has declared this primary failed and promotes.
// Two copies must not serve: nothing held is ever released from now on
// (degrade and onAck check the state), and the primary does not re-pair.
// It runs on the peer reader goroutine, before the connection's end can
// make the loop go degraded.
func (p *Primary) superseded(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sm.to(StateSuperseded, "the backup took over: "+reason+"; this copy's output stays held for good: delete it") {
		return // closed or failed
	}
	p.log.Error("superseded by the backup: output held for good, not re-pairing", "reason", reason)
}

// degrade lets the container run unreplicated: everything held is
// released and output passes from now on. It reports whether the primary
// is degraded now (not closed or superseded), to re-pair. Called by the
// loop only.
func (p *Primary) degrade(reason string) bool {
	p.mu.Lock()
	if p.sm.state == StateDegraded {
		p.mu.Unlock()
		return true
	}
	if !p.sm.to(StateDegraded, reason) { // closed, failed or superseded
		sender := p.sender
		p.mu.Unlock()
		if sender != nil {
			sender.Close()
		}
		return false
	}
	sender := p.sender
	// Output is released: a run of failed checkpoints no longer holds it.
	p.streak, p.lastFailure = 0, ""
	p.mu.Unlock()
	if sender != nil {
		select {
		case <-sender.Done(): // that connection has ended: nobody to tell
		default:
			// Before anything is released: a backup that hears it knows
			// its checkpoint is stale and does not take over.
			if err := sender.Goodbye(wire.GoodbyeDegraded, reason); err != nil {
				p.log.Warn("the backup was not told that this primary runs on degraded", "err", err)
			}
		}
	}
	if !p.markDegraded() {
		if sender != nil {
			sender.Close()
		}
		return true
	}
	p.log.Error("replication lost; running degraded (unreplicated), output released", "reason", reason)
	if err := p.gate.ReleaseAll(); err != nil {
		p.log.Error("releasing held output in degraded mode", "err", err)
	}
	if sender != nil {
		sender.Close()
	}
	return true
}

func (p *Primary) fail(reason string) {
	p.mu.Lock()
	failed := p.sm.to(StateFailed, reason)
	sender := p.sender
	p.mu.Unlock()
	if failed {
		p.log.Error("primary engine failed", "reason", reason)
	}
	if sender != nil {
		sender.Close()
	}
}

// Done is closed when the epoch loop has ended: failed, superseded or
// closed (a degraded primary keeps trying to re-pair).
func (p *Primary) Done() <-chan struct{} { return p.done }

// Status returns a snapshot.
func (p *Primary) Status() Status {
	g := p.gate.Stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{
		Pair: p.cfg.Pair, Role: RolePrimary, Peer: p.cfg.Peer, Mode: p.cfg.Mode, Log: p.logStatusLocked(), State: p.sm.state, StateSince: p.sm.since, StateSeconds: p.sm.seconds(), Reason: p.sm.reason, Repairs: p.repairs, Redials: p.redials,
		Epoch: p.epoch, CommittedEpoch: p.acked, LastCommitAt: p.ackedAt,
		Epochs: p.epochs, SkippedEpochs: p.skipped, IdleTicks: p.idle, DeferredEpochs: p.deferred, FailedEpochs: p.failed, Nacks: p.nacks,
		ConsecutiveFailures: p.streak, LastFailure: p.lastFailure,
		PauseMS: p.pause.summary(), InputHoldMS: p.hold.summary(), BytesPerEpoch: p.bytes.summary(), SentPerEpoch: p.sentBytes.summary(), AckMS: p.ackLat.summary(),
		MemoryCopiedPerEpoch: p.memCopied.summary(), RecentEpochs: slices.Clone(p.recent), Fence: p.fenceStatusLocked(),
		Gate: &GateStatus{
			OpenEpoch: g.Epoch, ReleasedEpoch: g.ReleasedEpoch, PassThrough: g.PassThrough,
			Held: g.Held, HeldBytes: g.HeldBytes, OldestHeldMS: ms(g.OldestHeldAge),
			Released: g.Released, Dropped: g.Dropped,
		},
	}
	if p.sm.state == StateDegraded && p.repairing != "" {
		s.Reason += "; re-pairing: " + p.repairing
	}
	if !p.ackedTaken.IsZero() {
		s.LagMS = ms(p.now().Sub(p.ackedTaken))
	}
	return s
}

// Close stops replication on a normal shutdown (StopShutdown); see Stop.
func (p *Primary) Close(ctx context.Context) error {
	return p.Stop(ctx, StopShutdown, "the primary's engine was closed")
}

// Stop stops replication on purpose and removes everything the engine
// made: it tells the backup why (a goodbye, so that it does not take
// over), then ends the epoch loop, the peer connection, the CRIU service,
// the rules and queues (held packets are dropped with the queues: the
// container is going away). Only the first call does anything.
func (p *Primary) Stop(ctx context.Context, reason StopReason, message string) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		cancel, sender, ck, started := p.cancel, p.sender, p.ck, p.cancel != nil
		// Closed first: the loop, seeing the connection end, must not go
		// degraded and release what it holds.
		p.sm.to(StateClosed, "stopped on purpose ("+reason.String()+"): "+message)
		p.mu.Unlock()
		var errs []error
		if started {
			if sender != nil {
				select {
				case <-sender.Done(): // that connection has ended: nobody to tell
				default:
					// Before the loop ends: its end closes the connection.
					if err := sender.Goodbye(reason, message); err != nil {
						p.log.Warn("the backup was not told that this primary stops on purpose; it may take over", "err", err)
					}
				}
			}
			cancel()
			select {
			case <-p.done:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("waiting for the epoch loop: %w", ctx.Err()))
			}
		}
		if ck != nil {
			if err := ck.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing checkpointer: %w", err))
			}
		}
		if err := p.packets.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("removing packet gate: %w", err))
		}
		if err := p.releaseFence(ctx); err != nil {
			// Not a failure to clean up: the lease expires by itself.
			p.log.Warn("the pair's ownership was not given up; it lapses with its lease", "err", err)
		}
		p.closeErr = errors.Join(errs...)
		p.log.Info("primary engine closed", "err", p.closeErr)
	})
	return p.closeErr
}
