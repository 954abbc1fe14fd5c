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
// A logging hold (NewLoggingInputHold, hybrid mode) also hands every packet
// to its Record function right before the verdict that delivers it: a
// packet is in the log before the container can see it. Packets held during
// a freeze are recorded at the release, after the checkpoint, which is when
// the container receives them.
type InputHold struct {
	q      PacketQueue
	log    *slog.Logger
	record Record

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
	pending   [][]byte // copies of held packets, to record at the release
}

// Record takes an inbound packet (from its IP header on) before it is
// delivered. It runs on the hold's reader goroutine (or in Release) and must
// not keep p. An error stops the hold: the packet is not delivered.
type Record func(p []byte) error

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

// NewLoggingInputHold returns an input hold on q that records every packet
// before delivering it. The queue must copy whole packets (a copy range of
// the largest packet, and no GSO aggregates beyond it).
func NewLoggingInputHold(q PacketQueue, record Record, log *slog.Logger) *InputHold {
	h := NewInputHold(q, log)
	h.record = record
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
	h.held, h.heldBytes, h.pending = 0, 0, nil
	if err != nil {
		return fmt.Errorf("input hold: %w", err)
	}
	return nil
}

func (h *InputHold) admit(pkts []Packet) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := pkts[len(pkts)-1].ID
	if h.record != nil {
		for i := range pkts {
			if len(pkts[i].Payload) != pkts[i].Len() {
				return fmt.Errorf("inbound packet %d of %d bytes cut at %d: it cannot be logged", pkts[i].ID, pkts[i].Len(), len(pkts[i].Payload))
			}
		}
	}
	if h.holding {
		h.held += len(pkts)
		for i := range pkts {
			h.heldBytes += int64(pkts[i].Len())
			if h.record != nil {
				h.pending = append(h.pending, append([]byte(nil), pkts[i].Payload...))
			}
		}
		h.lastHeld = last
		return nil
	}
	if h.record != nil {
		for i := range pkts {
			if err := h.record(pkts[i].Payload); err != nil {
				return fmt.Errorf("logging inbound packet %d: %w", pkts[i].ID, err)
			}
		}
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
// container. Packets already read but not yet accepted are held too.
func (h *InputHold) Hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.holding {
		h.holding = true
		h.holds++
		h.since = time.Now()
	}
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
		for len(h.pending) > 0 {
			if err := h.record(h.pending[0]); err != nil {
				return fmt.Errorf("logging a held inbound packet: %w", err)
			}
			h.pending = h.pending[1:]
		}
		h.pending = nil
		if err := h.q.VerdictBatch(h.lastHeld, Accept); err != nil {
			return fmt.Errorf("release %d held inbound packets: %w", h.held, err)
		}
		h.log.Debug("released inbound packets", "packets", h.held, "held_for", time.Since(h.since))
		h.accepted += uint64(h.held)
		h.held, h.heldBytes = 0, 0
	}
	h.holding = false
	return nil
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
