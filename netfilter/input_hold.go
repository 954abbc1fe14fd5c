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
type InputHold struct {
	q   PacketQueue
	log *slog.Logger

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
	if err := h.q.VerdictBatch(last, Accept); err != nil {
		return fmt.Errorf("accept inbound packets: %w", err)
	}
	h.accepted += uint64(len(pkts))
	return nil
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
