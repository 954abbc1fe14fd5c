// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Fence is a pair's ownership in a witness both hosts reach (the shim's
// adapter of replication/witness; docs/FENCING.md). With one, at most one
// side releases output or serves: the primary releases only while
// HeldUntil is ahead, and the backup promotes only once Acquire has made it
// the owner, which the witness allows only after the primary's lease has
// expired there. Without one (nil), the pair is unfenced: two hosts alone
// cannot tell a dead peer from a cut link.
type Fence interface {
	// Acquire makes this side the owner and keeps renewing it. Without
	// wait (the primary) it fails if the other side owns the pair; with
	// wait (the backup) it waits, until ctx ends, for the owner's lease to
	// expire. stale reports the previous owner's degraded mark: output it
	// released unreplicated, which the backup's checkpoints lack.
	Acquire(ctx context.Context, wait bool) (stale bool, err error)
	// HeldUntil is the time before which this side surely owns the pair
	// (its last renewal's TTL, counted from when it was sent, less a
	// margin for clock drift); zero when it does not.
	HeldUntil() time.Time
	// Changed is signalled when HeldUntil may have moved.
	Changed() <-chan struct{}
	// Lost is closed once the other side owns the pair.
	Lost() <-chan struct{}
	// MarkDegraded records (or clears) in the witness, only while this
	// side owns the pair, that it runs degraded.
	MarkDegraded(ctx context.Context, on bool) error
	// Release gives the ownership up (revokes the lease).
	Release(ctx context.Context) error
	Status() FenceStatus
}

// FenceStatus is the fence's part of a side's status ("unfenced" when the
// status has none).
type FenceStatus struct {
	Witness   string    `json:"witness"` // "etcd"
	Key       string    `json:"key"`
	Holder    string    `json:"holder"`
	Lease     string    `json:"lease,omitempty"` // hex, "" when not owning
	TTLMS     float64   `json:"ttl_ms"`
	MarginMS  float64   `json:"margin_ms"`
	HeldUntil time.Time `json:"held_until,omitzero"`
	// Held: owning now (HeldUntil ahead). Lost: the other side took the
	// pair over.
	Held     bool   `json:"held"`
	Lost     bool   `json:"lost,omitempty"`
	Renewals uint64 `json:"renewals,omitempty"`
	// Lapses counts the times the primary's ownership could have expired
	// (its output was held until renewed, or for good).
	Lapses uint64 `json:"lapses,omitempty"`
	// Degraded: the primary's degraded mark is recorded in the witness.
	Degraded bool `json:"degraded,omitempty"`
}

// fencedGate is the primary's output gate under a fence: a release happens
// only while the fence is held; asked for while it is not, it is kept and
// done when the fence is held again. When the fence lapses, pass-through
// (degraded) ends: output is held again until it is renewed (fail closed).
type fencedGate struct {
	OutputGate
	fence Fence
	log   *slog.Logger
	now   clock

	mu      sync.Mutex
	want    uint64 // the newest Release asked for
	all     bool   // ReleaseAll asked for, no Resume since
	passing bool   // the inner gate is in pass-through
	lapsed  bool
	lapses  uint64
}

func newFencedGate(g OutputGate, f Fence, log *slog.Logger, now clock) *fencedGate {
	return &fencedGate{OutputGate: g, fence: f, log: log, now: now}
}

// heldLocked: the fence is held now.
func (g *fencedGate) heldLocked() bool { return g.now().Before(g.fence.HeldUntil()) }

func (g *fencedGate) Release(epoch uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want = max(g.want, epoch)
	if !g.heldLocked() {
		return nil // done when the fence is held again (watch)
	}
	return g.OutputGate.Release(epoch)
}

func (g *fencedGate) ReleaseAll() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.all = true
	if !g.heldLocked() {
		return nil
	}
	g.passing = true
	return g.OutputGate.ReleaseAll()
}

func (g *fencedGate) Resume() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.all, g.passing = false, false
	return g.OutputGate.Resume()
}

// Lapses counts the fence's lapses seen so far.
func (g *fencedGate) Lapses() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lapses
}

// watch follows the fence until ctx ends: at the moment it lapses, output
// stops (pass-through ends); when it is held again, what was asked for
// meanwhile is released.
func (g *fencedGate) watch(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		g.check()
		until := g.fence.HeldUntil()
		wait := time.Hour
		if d := until.Sub(g.now()); !until.IsZero() && d > 0 {
			wait = d
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-g.fence.Changed():
		case <-t.C:
		}
	}
}

func (g *fencedGate) check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	held := g.heldLocked()
	switch {
	case !held && !g.lapsed:
		g.lapsed = true
		g.lapses++
		if g.passing {
			g.OutputGate.Resume()
			g.passing = false
		}
		g.log.Error("fence lapsed: this primary's ownership could have expired in the witness; output held until it is renewed (fail closed)",
			"held_until", g.fence.HeldUntil())
	case held && g.lapsed:
		g.lapsed = false
		var err error
		switch {
		case g.all:
			g.passing = true
			err = g.OutputGate.ReleaseAll()
		case g.want > 0:
			err = g.OutputGate.Release(g.want)
		}
		g.log.Warn("fence held again: output released as far as acknowledged", "epoch", g.want, "all", g.all, "err", err)
	}
}
