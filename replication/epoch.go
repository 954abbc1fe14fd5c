// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/runtime/criu"
)

// loop runs the pair until Close: epochs while a backup is connected; when
// it is lost, degraded (unreplicated) while re-pairing with the configured
// backup; then epochs again from a full checkpoint. A connection that ends
// by EOF or a reset is dialled again at once, output still held, before
// giving up on the backup (redial).
func (p *Primary) loop(ctx context.Context, paired bool) {
	defer close(p.done)
	for {
		if paired {
			next, reason := p.replicate(ctx)
			switch next {
			case stopReplicating:
				return
			case redialAtOnce:
				if p.redial(ctx, reason) {
					continue
				}
				if !p.degrade(reason) {
					return
				}
			}
		}
		if !p.repair(ctx) {
			return
		}
		paired = true
	}
}

// afterConnection is what the loop does when replicate returns.
type afterConnection int

const (
	stopReplicating afterConnection = iota // closed, failed or superseded
	repairDegraded                         // degraded: re-pair in the background
	redialAtOnce                           // the connection was lost: dial again before going degraded
)

// replicate is the epoch loop on one connection to the backup: one checkpoint
// per tick, sent in the background. When the backup is lost it goes
// degraded and returns true (re-pair); false if the primary is closed or
// cannot replicate any more (the gate stopped).
//
// At most one checkpoint is being sent at a time. If the previous one is
// still being sent when the tick comes, the checkpoint is deferred to the
// end of that send (not taken and queued: a queued image would be stale by
// the time it went out, and the later one carries everything it would
// have); more ticks during the same send are skipped. Waiting for the next
// tick instead would make the cycle, and the output's wait, two epochs
// whenever taking and sending one checkpoint takes a little longer than
// one. Acknowledgements are pipelined: a new checkpoint may be taken while
// the previous one waits for its ack.
func (p *Primary) replicate(ctx context.Context) (next afterConnection, reason string) {
	ticker := time.NewTicker(p.cfg.Epoch)
	defer ticker.Stop()
	stallCheck := time.NewTicker(max(p.cfg.AckTimeout/8, 10*time.Millisecond))
	defer stallCheck.Stop()
	sent := make(chan error, 1)
	sending, kicked := false, false
	p.mu.Lock()
	sender := p.sender
	p.mu.Unlock()
	// A lost backup: output is released first (degrade also closes the
	// connection, which ends a send in progress); then the send is waited
	// for, as its goroutine removes the image directory.
	lost := func(reason string) (afterConnection, string) {
		if p.degrade(reason) {
			return repairDegraded, reason
		}
		return stopReplicating, reason
	}
	defer func() {
		if sending {
			sender.Close()
			// Waited for, as its goroutine removes the image directory;
			// its failure (the connection just closed) changes nothing.
			if err := <-sent; err != nil {
				p.log.Debug("checkpoint send ended with the loop", "err", err)
			}
		}
	}()
	startSend := func() {
		dir, epoch, ok := p.checkpoint(ctx)
		if !ok {
			return
		}
		sending = true
		go func() {
			st, err := sender.Send(ctx, peer.Checkpoint{Epoch: epoch, Sources: []peer.Source{{FS: os.DirFS(dir)}}})
			// Send has queued every frame (and keeps what the next delta
			// needs mapped): the images can go.
			os.RemoveAll(dir)
			if err == nil {
				p.mu.Lock()
				p.sentBytes.add(float64(st.Sent))
				p.mu.Unlock()
			}
			sent <- err
		}()
	}
	startSend() // a full checkpoint brings the backup in sync
	for {
		select {
		case <-ctx.Done():
			return stopReplicating, ""
		case reason := <-p.peerFailed:
			return lost(reason)
		case <-sender.Done():
			reason := fmt.Sprintf("connection to backup ended: %v", sender.Err())
			if errors.Is(sender.Err(), peer.ErrConnectionLost) {
				return redialAtOnce, reason
			}
			return lost(reason)
		case err := <-p.packets.Failed():
			// The gate stopped: output is dropped (fail closed) and cannot be
			// released any more. Replication is pointless; say so loudly.
			p.fail(fmt.Sprintf("packet gate stopped, container output is dropped: %v", err))
			return stopReplicating, ""
		case err := <-sent:
			sending = false
			if err != nil && ctx.Err() == nil {
				return lost(fmt.Sprintf("sending checkpoint: %v", err))
			}
			if kicked {
				kicked = false
				startSend()
			}
		case now := <-stallCheck.C:
			if reason, stalled := p.ackStall(now); stalled {
				p.log.Error("the backup's acknowledgements stopped while its heartbeats come: treating it as failed", "reason", reason)
				return lost(reason)
			}
		case <-p.kick:
			if sending {
				kicked = true
				continue
			}
			startSend()
		case <-ticker.C:
			if !sending && p.idleTick() {
				continue
			}
			if sending {
				p.mu.Lock()
				if kicked {
					p.skipped++
				} else {
					p.deferred++
				}
				p.mu.Unlock()
				kicked = true
				continue
			}
			startSend()
		}
	}
}

// checkpoint takes the checkpoint of the open epoch: hold input → freeze →
// seal the gate's epoch → dump → thaw → release input. The hold starts right
// before the freeze (after CRIU's start-up) and ends right after the thaw.
// It returns the image directory and the wire epoch to
// send, ok false if it failed (the epoch's output then waits for the next
// checkpoint).
func (p *Primary) checkpoint(ctx context.Context) (dir string, epoch uint64, ok bool) {
	p.mu.Lock()
	ck, offset := p.ck, p.offset
	p.mu.Unlock()
	dir, err := os.MkdirTemp(p.opts.WorkDir, "epoch-")
	if err != nil {
		p.checkpointFailed(0, fmt.Errorf("image dir: %w", err))
		return "", 0, false
	}
	var sealed uint64
	var held time.Time
	var holdErr error
	holding := false
	hold := func() {
		held = p.now()
		if holdErr = p.input.Hold(); holdErr == nil {
			holding = true
		}
	}
	release := func() {
		if !holding {
			return
		}
		holding = false
		if rerr := p.input.Release(); rerr != nil {
			p.log.Error("releasing held input after the checkpoint", "err", rerr)
		}
		d := p.now().Sub(held)
		p.mu.Lock()
		p.hold.add(ms(d))
		p.mu.Unlock()
	}
	var sealErr error
	var packets uint64
	seal := func() {
		packets = p.packetsSeen()
		sealed = p.gate.Seal()
		if p.hybrid != nil {
			// The inputs delivered before the freeze are in the state
			// dumped: they go into the log before the seal.
			if sealErr = p.input.Drain(); sealErr == nil {
				sealErr = p.sealLog(sealed + offset)
			}
		}
	}
	// Input is held only from just before the freeze to the thaw; the seal
	// happens while frozen. Output is never released here.
	overdue := time.AfterFunc(p.cfg.FailingAfter, func() { p.checkpointOverdue(p.cfg.FailingAfter) })
	st, err := ck.CheckpointWithHooks(ctx, dir, criu.CheckpointHooks{BeforeFreeze: hold, Frozen: seal, Thawed: release})
	overdue.Stop()
	release() // no-op unless a checkpointer broke the Thawed promise
	taken := p.now()
	if err == nil && holdErr != nil {
		// Input reached the frozen container: its sockets may have
		// changed while they were dumped.
		err = holdErr
	}
	if err == nil && sealed == 0 {
		err = errors.New("checkpointer did not report the freeze; epoch not sealed")
	}
	if err == nil && sealErr != nil {
		err = fmt.Errorf("sealing the input log: %w", sealErr)
	}
	if err != nil {
		os.RemoveAll(dir)
		p.checkpointFailed(sealed, err)
		return "", 0, false
	}
	epoch = sealed + offset
	p.mu.Lock()
	p.epoch = epoch
	p.sealedPackets = packets
	p.epochs++
	p.taken[epoch] = takenCheckpoint{at: taken, pause: st.Pause}
	p.pause.add(ms(st.Pause))
	p.bytes.add(float64(st.ImageBytes))
	p.memCopied.add(float64(st.CRIUPages * uint64(os.Getpagesize())))
	p.mu.Unlock()
	p.log.Debug("checkpoint taken", "epoch", epoch, "wait", st.Wait, "pause", st.Pause, "freeze", st.Freeze, "dump", st.Dump, "criu_frozen", st.CRIUFrozen,
		"thaw", st.Thaw, "merge", st.Merge, "pages_copied", st.CRIUPages, "pages_from_parent", st.ParentPages, "bytes", st.ImageBytes)
	return dir, epoch, true
}

// packetsSeen counts the packets that have left the container (every one
// the gate was given, whatever became of it) or entered it (delivered or
// dropped; not those a checkpoint's hold keeps, which enter after it).
func (p *Primary) packetsSeen() uint64 {
	g, h := p.gate.Stats(), p.input.Stats()
	return g.Released + uint64(g.Held) + g.Dropped + h.Accepted + h.Dropped
}

// idleTick reports (and counts) a tick that needs no checkpoint
// (Config.SkipIdle): the newest checkpoint is committed, and no packet has
// entered or left the container since it was sealed. Whatever the container
// did since is visible to no one; the first packet in or out makes the next
// tick take a checkpoint, which holds that packet's effect.
func (p *Primary) idleTick() bool {
	if !p.cfg.SkipIdle {
		return false
	}
	seen := p.packetsSeen()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epoch == 0 || p.acked != p.epoch || p.streak > 0 || seen != p.sealedPackets {
		return false
	}
	p.idle++
	return true
}

// checkpointOverdue: a checkpoint has run for the failing bound without
// returning (CRIU hung, say). That is failing too, not an in-sync primary
// whose output silently waits; a later acknowledged checkpoint makes it
// in-sync again, a failure counts as usual.
func (p *Primary) checkpointOverdue(bound time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	reason := fmt.Sprintf("a checkpoint has been running for %s (io.rrc.failing-after) and has not returned, %s", bound, p.failingHolds())
	p.lastFailure = reason
	if p.sm.to(StateFailing, reason) {
		p.log.Error("checkpoint overdue: state failing", "bound_time", bound)
	}
}

func (p *Primary) checkpointFailed(sealed uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed++
	p.log.Error("checkpoint failed; output stays held until a later checkpoint is acknowledged", "sealed_epoch", sealed, "consecutive_failures", p.streak+1, "err", err)
	p.failureLocked(err)
}
