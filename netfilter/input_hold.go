// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// InputHold queues the container's inbound packets while it is frozen for a
// checkpoint and delivers them right after the thaw. CRIU's own network lock
// drops them instead, which costs each affected client a TCP retransmission
// timeout (>= 200 ms); holding costs only the freeze. Outside a hold, packets
// are accepted as they come, one batch verdict per read batch.
//
// A switched hold (NewSwitchedInputHold, hybrid mode) has the kernel queue
// inbound packets only while it holds: outside a freeze they reach the
// container without a detour through this process, and an InputCapture
// logs them as they are delivered (Drain).
type InputHold struct {
	q       PacketQueue
	log     *slog.Logger
	sw      HoldSwitch    // nil: every packet is queued
	capture *InputCapture // logs what is delivered (switched holds)

	rewrite Rewrite // applied to what is accepted outside a hold (SetRewrite)

	mu        sync.Mutex
	holding   bool
	stopped   bool
	held      int    // packets held by the current hold
	heldBytes int64  //
	lastHeld  uint32 // id of the last of them
	since     time.Time
	accepted  uint64
	holds     uint64
	dropped   uint64
	counters  loopCounters
}

// HoldStats is a snapshot of an InputHold.
type HoldStats struct {
	Holding   bool
	Held      int   // packets held now
	HeldBytes int64 //
	Accepted  uint64
	Holds     uint64 // Hold calls
	Dropped   uint64 // packets held when Run stopped
	Overruns  uint64
	Rejected  uint64
}

// NewInputHold returns an input hold on q, not holding.
func NewInputHold(q PacketQueue, log *slog.Logger) *InputHold {
	if log == nil {
		log = slog.Default()
	}
	return &InputHold{q: q, log: log}
}

// NewSwitchedInputHold returns an input hold on q whose packets the kernel
// queues only while sw is on, and whose deliveries capture logs.
func NewSwitchedInputHold(q PacketQueue, sw HoldSwitch, capture *InputCapture, log *slog.Logger) *InputHold {
	h := NewInputHold(q, log)
	h.sw, h.capture = sw, capture
	return h
}

// Run reads inbound packets until ctx is done (nil) or the queue fails. When
// it returns, held packets are given up (the kernel drops them when the
// queue is closed; TCP retransmits them to the restored container).
func (h *InputHold) Run(ctx context.Context) error {
	err := readLoop(ctx, h.q, h.log, &h.counters, h.admit)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.dropped += uint64(h.held)
	h.held, h.heldBytes = 0, 0
	if err != nil {
		return fmt.Errorf("input hold: %w", err)
	}
	return nil
}

func (h *InputHold) admit(pkts []Packet) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := pkts[len(pkts)-1].ID
	if h.holding {
		h.held += len(pkts)
		for i := range pkts {
			h.heldBytes += int64(pkts[i].Len())
		}
		h.lastHeld = last
		return nil
	}
	if err := acceptRewritten(h.q, pkts, h.rewrite); err != nil {
		return fmt.Errorf("accept inbound packets: %w", err)
	}
	h.accepted += uint64(len(pkts))
	return nil
}

// SetRewrite makes the hold rewrite the packets it accepts outside a hold
// from now on (those a hold held are delivered as they are).
func (h *InputHold) SetRewrite(rw Rewrite) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rewrite = rw
}

// Hold starts holding inbound packets: call it just before freezing the
// container. Packets already read but not yet accepted are held too. A
// switched hold that cannot switch the queueing on does not hold.
func (h *InputHold) Hold() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holding {
		return nil
	}
	if h.sw != nil {
		if err := h.sw.Set(true); err != nil {
			return fmt.Errorf("hold input: %w", err)
		}
	}
	h.holding = true
	h.holds++
	h.since = time.Now()
	return nil
}

// Release delivers the held packets, in order, with one batch verdict, and
// ends the hold: call it right after the thaw.
func (h *InputHold) Release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return fmt.Errorf("release input: %w", ErrStopped)
	}
	if h.held > 0 {
		if err := h.q.VerdictBatch(h.lastHeld, Accept); err != nil {
			return fmt.Errorf("release %d held inbound packets: %w", h.held, err)
		}
		h.log.Debug("released inbound packets", "packets", h.held, "held_for", time.Since(h.since))
		h.accepted += uint64(h.held)
		h.held, h.heldBytes = 0, 0
	}
	h.holding = false
	// Packets the kernel queues until the switch is off are accepted as
	// they come.
	if h.sw != nil {
		if err := h.sw.Set(false); err != nil {
			return fmt.Errorf("release input: %w", err)
		}
	}
	return nil
}

// Drain logs every inbound packet delivered so far (a switched hold's
// capture; otherwise there is nothing to log). The gate drains before it
// logs outputs, the engine before it seals the log at a checkpoint.
func (h *InputHold) Drain() error {
	if h.capture == nil {
		return nil
	}
	return h.capture.Drain()
}

// Stats returns a snapshot of the hold.
func (h *InputHold) Stats() HoldStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HoldStats{
		Holding: h.holding, Held: h.held, HeldBytes: h.heldBytes, Accepted: h.accepted,
		Holds: h.holds, Dropped: h.dropped,
		Overruns: h.counters.overruns.Load(), Rejected: h.counters.rejected.Load(),
	}
}
