// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"fmt"
)

// Judge decides, on the gate's reader goroutine and in queue order, what
// becomes of a packet of a replay (hybrid mode's failover): kept, it is
// held like any other until ReleaseAll; not kept, it is dropped at once. The
// packet must be whole (the queue copies whole packets) and is valid only
// during the call.
type Judge func(packet []byte) (keep bool)

// SetJudge makes the gate judge every packet it reads from now on, instead
// of holding all of them, until ReleaseAll.
func (g *OutputGate) SetJudge(j Judge) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.judge = j
}

// judged applies the judge to p and drops it at once if not kept. A packet
// the queue cut short cannot be judged: it stops the gate (fail closed).
func (g *OutputGate) judged(p *Packet) (bool, error) {
	if int(p.CapLen) != len(p.Payload) {
		return false, fmt.Errorf("judging packet %d: %d of its %d bytes copied (the queue must copy whole packets)", p.ID, len(p.Payload), p.CapLen)
	}
	if g.judge(p.Payload) {
		return true, nil
	}
	if err := g.q.Verdict(p.ID, Drop); err != nil {
		return false, fmt.Errorf("dropping judged packet %d: %w", p.ID, err)
	}
	g.dropped++
	return false, nil
}

// DropHeld drops the judged packets held that match, e.g. those of
// connections a replay resets, and keeps the others in order.
func (g *OutputGate) DropHeld(match func(packet []byte) bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return fmt.Errorf("drop held packets: %w", ErrStopped)
	}
	kept := g.held[:0]
	for i, p := range g.held {
		if p.data == nil || !match(p.data) {
			kept = append(kept, p)
			continue
		}
		if err := g.q.Verdict(p.id, Drop); err != nil {
			kept = append(kept, g.held[i:]...)
			g.held = kept
			return fmt.Errorf("drop held packet %d: %w", p.id, err)
		}
		g.heldBytes -= int64(p.size)
		g.dropped++
	}
	g.held = kept
	return nil
}

// SetRewrite makes the gate rewrite what it lets pass from now on: the
// judged packets ReleaseAll releases, and everything after them.
func (g *OutputGate) SetRewrite(rw Rewrite) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rewrite = rw
}

// releaseJudged accepts, rewritten where the rewrite says so, the judged
// packets held before the first one that is not (all of them: a gate judges
// from a point on); ReleaseAll accepts the rest.
func (g *OutputGate) releaseJudged() error {
	if g.rewrite == nil {
		return nil
	}
	k := 0
	for k < len(g.held) && g.held[k].data != nil {
		k++
	}
	if k == 0 {
		return nil
	}
	pkts := make([]Packet, k)
	for i, p := range g.held[:k] {
		pkts[i] = Packet{ID: p.id, CapLen: uint32(len(p.data)), Payload: p.data}
	}
	if err := acceptRewritten(g.q, pkts, g.rewrite); err != nil {
		return err
	}
	g.forgetFirst(k)
	return nil
}
