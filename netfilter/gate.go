// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// ErrStopped is returned by the release methods once Run has returned: the
// held packets are then given up (the kernel drops them when the queue is
// closed), never released.
var ErrStopped = errors.New("netfilter: gate stopped")

// OutputGate holds every outbound packet of the container until the epoch
// that produced it is committed (invariant 1 of docs/ARCHITECTURE.md, output
// commit).
//
// Epochs are numbered from 1. Packets are tagged, as they are read, with the
// open epoch; Seal closes it and opens the next. Tagging happens when the
// gate reads a packet, a little after the kernel queued it, so a packet sent
// just before the freeze may land in the epoch after: it is then held one
// epoch longer, which is safe; the reverse cannot happen.
//
// Release(e) accepts the held packets of epochs <= e with one batch verdict
// on the highest id among them. Kernel ids increase in queue order and the
// gate's epochs increase with them, so the batch never includes a packet of
// a later epoch, and the kernel reinjects in queue order: order is kept.
//
// A tagged gate (NewTaggedOutputGate, hybrid mode) tags each packet with
// what its Tag function returns instead, in queue order (the sequence
// number of the packet's record in the log); Release(t) then accepts the
// packets tagged up to t, and there is nothing to seal.
type OutputGate struct {
	q      PacketQueue
	log    *slog.Logger
	now    func() time.Time
	tag    Tag
	logged func()       // after each batch read, outside the lock (NewTaggedOutputGate)
	drain  func() error // logs the inputs delivered so far, before tagging (hybrid mode)

	mu          sync.Mutex
	epoch       uint64       // open epoch: packets read now belong to it
	lastTag     uint64       // a tagged gate's last tag
	released    uint64       // highest epoch released
	passThrough bool         // degraded mode: accept at once
	judge       Judge        // a replay's judge of each packet (SetJudge), or nil
	rewrite     Rewrite      // applied to what passes (SetRewrite), or nil
	stopped     bool         // Run returned
	held        []heldPacket // in id order, hence in epoch order
	heldBytes   int64
	nReleased   uint64
	bReleased   uint64
	dropped     uint64
	counters    loopCounters
}

type heldPacket struct {
	id    uint32
	size  uint32
	epoch uint64
	at    time.Time
	data  []byte // a judged packet's copy: what DropHeld matches and rewrite changes
}

// GateStats is a snapshot of an OutputGate.
type GateStats struct {
	Epoch         uint64        // open epoch
	ReleasedEpoch uint64        // highest epoch released
	PassThrough   bool          // degraded mode (ReleaseAll)
	Held          int           // packets held now
	HeldBytes     int64         // their wire size
	OldestHeldAge time.Duration // how long the oldest held packet has waited
	Released      uint64        // packets released so far (held or passed through)
	ReleasedBytes uint64        //
	Dropped       uint64        // packets held when the gate stopped (the kernel drops them), or dropped by a replay's judge
	Overruns      uint64        // receive-buffer overruns (the kernel dropped the packets it could not report)
	Rejected      uint64        // verdicts the kernel rejected
}

// NewOutputGate returns a gate on q, holding, with epoch 1 open.
func NewOutputGate(q PacketQueue, log *slog.Logger) *OutputGate {
	if log == nil {
		log = slog.Default()
	}
	return &OutputGate{q: q, log: log, now: time.Now, epoch: 1}
}

// Tag gives a held packet its release tag. It runs on the gate's reader
// goroutine, in queue order, and its tags must not decrease. An error stops
// the gate (fail closed: the held packets are dropped).
type Tag func(p *Packet) (uint64, error)

// NewTaggedOutputGate returns a gate on q that holds every packet under the
// tag tag gives it, until Release reaches that tag.
// logged, if set, is called on the reader goroutine after each batch it
// read, outside the gate's lock (hybrid mode sends the batch's log records
// from there: a reply's record leaves without a goroutine switch).
func NewTaggedOutputGate(q PacketQueue, tag Tag, logged func(), log *slog.Logger) *OutputGate {
	g := NewOutputGate(q, log)
	g.tag, g.logged = tag, logged
	return g
}

// Run reads packets and holds them (or, in pass-through, accepts them) until
// ctx is done (nil) or the queue fails. When it returns, the gate is stopped:
// held packets are counted as dropped and the caller closes the queue, which
// makes the kernel drop them.
func (g *OutputGate) Run(ctx context.Context) error {
	err := readLoop(ctx, g.q, g.log, &g.counters, func(pkts []Packet) error {
		err := g.admit(pkts)
		if g.logged != nil {
			g.logged()
		}
		return err
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if len(g.held) > 0 {
		g.log.Warn("output gate stopped with packets held; they are dropped", "held", len(g.held), "epoch", g.epoch)
	}
	g.dropped += uint64(len(g.held))
	g.held, g.heldBytes = nil, 0
	if err != nil {
		return fmt.Errorf("output gate: %w", err)
	}
	return nil
}

// admit tags a batch of packets with the open epoch, or accepts it in pass-through.
func (g *OutputGate) admit(pkts []Packet) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.passThrough {
		if err := acceptRewritten(g.q, pkts, g.rewrite); err != nil {
			return fmt.Errorf("pass packets through: %w", err)
		}
		g.nReleased += uint64(len(pkts))
		for i := range pkts {
			g.bReleased += uint64(pkts[i].Len())
		}
		return nil
	}
	if g.tag != nil && g.drain != nil {
		// Every input delivered before these outputs were read goes into
		// the log before them.
		if err := g.drain(); err != nil {
			return err
		}
	}
	now := g.now()
	for i := range pkts {
		var data []byte
		if g.judge != nil {
			keep, err := g.judged(&pkts[i])
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
			data = append([]byte(nil), pkts[i].Payload...)
		}
		e := g.epoch
		if g.tag != nil {
			var err error
			if e, err = g.tag(&pkts[i]); err != nil {
				return fmt.Errorf("tagging packet %d: %w", pkts[i].ID, err)
			}
			if e < g.lastTag {
				return fmt.Errorf("tagging packet %d: tag %d after %d", pkts[i].ID, e, g.lastTag)
			}
			g.lastTag = e
		}
		g.held = append(g.held, heldPacket{id: pkts[i].ID, size: uint32(pkts[i].Len()), epoch: e, at: now, data: data})
		g.heldBytes += int64(pkts[i].Len())
	}
	return nil
}

// Seal ends the open epoch and returns its number; packets read from now on
// belong to the next. Call it once the container is frozen, before the
// checkpoint of the epoch is taken.
func (g *OutputGate) Seal() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
	return g.epoch - 1
}

// Release accepts, in order and with one batch verdict, every held packet of
// the epochs up to and including epoch: call it when the backup has
// acknowledged that epoch's checkpoint. Releasing an unsealed epoch is an
// error; releasing one again is a no-op.
func (g *OutputGate) Release(epoch uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return fmt.Errorf("release epoch %d: %w", epoch, ErrStopped)
	}
	if g.tag == nil && epoch >= g.epoch {
		return fmt.Errorf("release epoch %d: not sealed (epoch %d is open)", epoch, g.epoch)
	}
	k := sort.Search(len(g.held), func(i int) bool { return g.held[i].epoch > epoch })
	if err := g.releaseFirst(k); err != nil {
		return fmt.Errorf("release epoch %d: %w", epoch, err)
	}
	g.released = max(g.released, epoch)
	return nil
}

// ReleaseAll is degraded mode (no backup): it releases everything held and
// makes the gate accept packets as they come (batched) until Resume.
func (g *OutputGate) ReleaseAll() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return fmt.Errorf("release all: %w", ErrStopped)
	}
	if err := g.releaseJudged(); err != nil {
		return fmt.Errorf("release all: %w", err)
	}
	if err := g.releaseFirst(len(g.held)); err != nil {
		return fmt.Errorf("release all: %w", err)
	}
	g.passThrough, g.judge = true, nil
	return nil
}

// Resume ends pass-through: packets read from now on are held again, in the
// returned (open) epoch. For when a backup is back.
func (g *OutputGate) Resume() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.passThrough = false
	return g.epoch
}

// releaseFirst accepts the first k held packets; on error nothing changes.
func (g *OutputGate) releaseFirst(k int) error {
	if k == 0 {
		return nil
	}
	if err := g.q.VerdictBatch(g.held[k-1].id, Accept); err != nil {
		return err
	}
	g.forgetFirst(k)
	return nil
}

// forgetFirst counts the first k held packets as released and lets them go.
func (g *OutputGate) forgetFirst(k int) {
	for _, p := range g.held[:k] {
		g.heldBytes -= int64(p.size)
		g.bReleased += uint64(p.size)
	}
	g.nReleased += uint64(k)
	g.held = g.held[k:]
	if len(g.held) == 0 {
		g.held = g.held[:0:0] // let the backing array go
	}
}

// Stats returns a snapshot of the gate.
func (g *OutputGate) Stats() GateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := GateStats{
		Epoch:         g.epoch,
		ReleasedEpoch: g.released,
		PassThrough:   g.passThrough,
		Held:          len(g.held),
		HeldBytes:     g.heldBytes,
		Released:      g.nReleased,
		ReleasedBytes: g.bReleased,
		Dropped:       g.dropped,
		Overruns:      g.counters.overruns.Load(),
		Rejected:      g.counters.rejected.Load(),
	}
	if len(g.held) > 0 {
		s.OldestHeldAge = g.now().Sub(g.held[0].at)
	}
	return s
}
