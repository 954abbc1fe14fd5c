// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/iorrc/rrc/replication/peer"
)

// The backup's side of fencing (fence.go, docs/FENCING.md): a primary
// declared failed is replaced only once this side owns the pair in the
// witness, which it can only once the primary's lease has expired there;
// by then the primary has stopped releasing output (its margin).

// declaredFailedState is where a primary's failure takes the backup:
// fencing with a witness, else straight to promoting.
func (b *Backup) declaredFailedState() State {
	if b.opts.Fence != nil {
		return StateFencing
	}
	return StatePromoting
}

// fenceLocked starts the wait for the pair's ownership if the backup is
// fencing (b.mu held), and reports whether it did.
func (b *Backup) fenceLocked(f peer.PeerFailure) bool {
	if b.sm.state != StateFencing {
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stopFencing = cancel
	b.log.Warn("primary declared failed; taking the pair's ownership in the witness before promoting (its lease must expire first)", "reason", f.Reason)
	go b.takeOwnership(ctx, f)
	return true
}

// takeOwnership waits to own the pair, then promotes; unless the wait was
// ended (the primary reconnected: it holds its lease), or the primary had
// run degraded (its released output is in no checkpoint here), when the
// ownership is given back and the backup waits for the primary.
func (b *Backup) takeOwnership(ctx context.Context, f peer.PeerFailure) {
	start := b.now()
	stale, err := b.opts.Fence.Acquire(ctx, true)
	took := b.now().Sub(start)
	if err != nil {
		b.log.Info("not taking the pair over: the wait for its ownership ended", "after", took.Round(time.Millisecond), "err", err)
		return
	}
	b.mu.Lock()
	switch {
	case b.sm.state != StateFencing:
		// The primary reconnected as the ownership came: its lease had
		// expired, so it holds its output; it takes the pair back.
		b.mu.Unlock()
		b.log.Warn("owner of the pair, but the primary reconnected meanwhile: giving the ownership back", "state", b.sm.state)
		b.giveBack()
		return
	case stale:
		b.sm.to(StateDisconnected, "owner of the pair, but the primary had run degraded (the witness holds its mark): its output went out unreplicated and the checkpoint held here is stale; not promoting, ownership given back, waiting for the primary")
		b.mu.Unlock()
		b.log.Error("not promoting: the primary ran degraded after this backup's last checkpoint; ownership given back")
		b.giveBack()
		return
	}
	b.stopFencing = nil
	b.sm.to(StatePromoting, fmt.Sprintf("%s; owner of the pair in the witness after %s", f.Reason, took.Round(time.Millisecond)))
	b.mu.Unlock()
	b.log.Warn("owner of the pair: promoting", "fence", took.Round(time.Millisecond))
	b.recv.Supersede("the backup owns the pair in the witness (" + f.Reason + ") and promotes its last checkpoint")
	b.promote(f, took)
}

func (b *Backup) giveBack() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.opts.Fence.Release(ctx); err != nil {
		b.log.Warn("giving the pair's ownership back failed; it expires with its lease", "err", err)
	}
}

// fenceStatus is the status's fence part, nil when unfenced.
func (b *Backup) fenceStatus() *FenceStatus {
	if b.opts.Fence == nil {
		return nil
	}
	s := b.opts.Fence.Status()
	s.Held = b.now().Before(s.HeldUntil)
	return &s
}
