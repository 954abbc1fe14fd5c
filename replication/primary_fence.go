// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The primary's side of fencing (fence.go, docs/FENCING.md). The gate's
// releases go through fencedGate; what is here: a lost ownership makes the
// primary superseded, a degraded run is recorded in the witness before its
// output is released, and the ownership is given up on a deliberate stop.

// watchFence makes the primary superseded when the other side owns the
// pair, until ctx ends.
func (p *Primary) watchFence(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-p.fence.Lost():
		p.superseded("the witness names the other side the owner of the pair (this primary's lease expired)")
		p.mu.Lock()
		sender := p.sender
		p.mu.Unlock()
		if sender != nil {
			sender.Close() // the loop stops: a superseded primary does not re-pair
		}
	}
}

// markDegraded records in the witness, while this primary owns the pair,
// that it is about to release output unreplicated: a backup that takes
// over later then knows its checkpoints are stale. It reports whether the
// output may be released; if not, the primary stays degraded with its
// output held (fail closed) and re-pairs. Unfenced: always.
func (p *Primary) markDegraded() bool {
	if p.fence == nil {
		return true
	}
	until := p.fence.HeldUntil()
	ctx, cancel := context.WithDeadline(context.Background(), until)
	defer cancel()
	err := p.fence.MarkDegraded(ctx, true)
	if err == nil && p.now().Before(p.fence.HeldUntil()) {
		p.mu.Lock()
		p.marked = true
		p.mu.Unlock()
		return true
	}
	if err == nil {
		err = fmt.Errorf("the ownership lapsed while it was recorded (held until %s)", p.fence.HeldUntil().Format(time.RFC3339Nano))
	}
	p.mu.Lock()
	first := !p.unrecorded
	if first {
		p.unrecorded = true
		p.sm.to(StateDegraded, p.sm.reason+"; "+unrecordedReason+err.Error())
	}
	p.mu.Unlock()
	if first {
		p.log.Error("not running degraded: the witness did not record it; output held until it does or the backup is back", "err", err)
	}
	return false
}

const unrecordedReason = "output held, not released: the witness did not record the degraded run: "

// retryDegraded, while re-pairing, tries again to record a degraded run
// that the witness did not record, and releases the output once it has.
func (p *Primary) retryDegraded() {
	p.mu.Lock()
	pending := p.unrecorded && p.sm.state == StateDegraded
	p.mu.Unlock()
	if !pending || !p.markDegraded() {
		return
	}
	p.mu.Lock()
	p.unrecorded = false
	if i := strings.Index(p.sm.reason, "; "+unrecordedReason); i >= 0 {
		p.sm.to(StateDegraded, p.sm.reason[:i])
	}
	reason := p.sm.reason
	p.mu.Unlock()
	p.log.Error("the witness recorded the degraded run: running degraded, output released", "reason", reason)
	if err := p.gate.ReleaseAll(); err != nil {
		p.log.Error("releasing held output in degraded mode", "err", err)
	}
}

// clearMarkLocked removes the degraded mark once the backup is in sync
// again (p.mu held); in the background, as it asks the witness.
func (p *Primary) clearMarkLocked() {
	if p.fence == nil || !p.marked {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.fence.MarkDegraded(ctx, false); err != nil {
			// The backup then refuses to promote: unavailable, never wrong.
			p.log.Warn("the degraded mark was not cleared in the witness; the backup will not take over until it is", "err", err)
			return
		}
		p.mu.Lock()
		p.marked = false
		p.mu.Unlock()
		p.log.Info("degraded mark cleared in the witness: the backup is in sync again")
	}()
}

// releaseFence gives the ownership up on a deliberate stop (the backup
// was told goodbye and does not take over).
func (p *Primary) releaseFence(ctx context.Context) error {
	if p.fence == nil {
		return nil
	}
	if err := p.fence.Release(ctx); err != nil {
		return fmt.Errorf("releasing the pair's ownership: %w", err)
	}
	return nil
}

// fenceStatusLocked is the status's fence part, nil when unfenced.
func (p *Primary) fenceStatusLocked() *FenceStatus {
	if p.fence == nil {
		return nil
	}
	s := p.fence.Status()
	s.Held = p.now().Before(s.HeldUntil)
	s.Lapses = p.fgate.Lapses()
	s.Degraded = p.marked
	return &s
}
