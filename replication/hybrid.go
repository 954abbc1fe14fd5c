// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/hybridlog"
)

// Hybrid mode on the primary (docs/HYBRID.md): every packet that enters the
// container is logged whole before it is delivered, every packet it sends
// is logged as a digest and held under its record's sequence number, and
// the log streams to the backup. An output is released once the backup
// holds the log up to its record and has committed a checkpoint on this
// connection (the log is replayed from one); checkpoints go on at their
// interval and release only what their state covers.

// hybrid is the primary's hybrid-mode state, guarded by Primary.mu except
// the log, which has its own lock.
type hybrid struct {
	log       *hybridlog.Log
	sendMu    sync.Mutex        // one sender of the log's batches at a time, in order
	sealSeq   map[uint64]uint64 // wire epoch → last log record before its checkpoint, until answered
	committed bool              // a checkpoint was committed on this connection
	coverSeq  uint64            // outputs up to here are in a committed checkpoint's state
	ackedSeq  uint64            // the backup holds the log up to here
	released  uint64            // outputs released up to here
	// rate is (time, bytes sent) at the last seals, for the log's bytes
	// per second.
	rate []rateSample
	// roundTrip: a batch's first record appended → the backup's
	// acknowledgement of the batch, in ms.
	roundTrip timings
}

type rateSample struct {
	at    time.Time
	bytes uint64
}

// rateSamples bounds the window of the log's rate: the last ten checkpoints.
const rateSamples = 10

func newHybrid() *hybrid {
	return &hybrid{log: hybridlog.NewLog(0), sealSeq: map[uint64]uint64{}}
}

// hybridHooks log the container's packets at the gate. The goroutine that
// logged records hands them to the peer channel right after (flushLog): the
// gate's reader after each batch of outputs, the capture after each
// background drain.
func (p *Primary) hybridHooks() PacketHooks {
	h := p.hybrid
	return PacketHooks{
		Tag: func(pkt []byte) (uint64, error) {
			a, err := h.log.AppendQuiet(hybridlog.Record{Kind: hybridlog.KindOutput, At: p.now(), Digest: hybridlog.Digest(pkt)})
			return a.Seq, err
		},
		Logged: p.flushLog,
		Record: func(pkt []byte) error {
			_, err := h.log.AppendQuiet(hybridlog.Record{Kind: hybridlog.KindInput, At: p.now(), Packet: pkt})
			return err
		},
	}
}

// restart begins the log for a new connection: records follow the
// checkpoint of epoch until the next seal, and nothing is released before
// a checkpoint of this connection is committed.
func (h *hybrid) restart(epoch uint64) {
	h.log.Restart(epoch)
	h.sealSeq = map[uint64]uint64{}
	h.committed = false
}

// pumpLog sends the log's batches that no packet reader sent itself.
func (p *Primary) pumpLog(ctx context.Context) {
	for p.hybrid.log.Wait(ctx) == nil {
		p.hybrid.sendMu.Lock()
		p.sendLogLocked(ctx)
		p.hybrid.sendMu.Unlock()
	}
}

// flushLog sends the log's batches on the caller's goroutine, unless a send
// is under way: then pumpLog is woken to send them after it.
func (p *Primary) flushLog() {
	if !p.hybrid.sendMu.TryLock() {
		p.hybrid.log.Wake()
		return
	}
	defer p.hybrid.sendMu.Unlock()
	p.mu.Lock()
	ctx := p.loopCtx
	p.mu.Unlock()
	if ctx == nil {
		p.hybrid.log.Wake() // not started: pumpLog sends them once it runs
		return
	}
	p.sendLogLocked(ctx)
}

// sendLogLocked sends every batch the log holds on the connection of the
// moment, in order (the caller holds hybrid.sendMu). While no backup is in
// sync or syncing (degraded: output passes), they are dropped and counted
// as acknowledged, so that the log does not grow; a re-pairing restarts it.
func (p *Primary) sendLogLocked(ctx context.Context) {
	for {
		b, ok := p.hybrid.log.Take()
		if !ok {
			return
		}
		p.mu.Lock()
		// Failing checkpoints do not stop the log: it covers the output.
		sender, live := p.sender, p.sm.state == StateSyncing || p.sm.state == StateInSync || p.sm.state == StateFailing
		p.mu.Unlock()
		if !live || sender == nil {
			p.hybrid.log.Ack(b.Last())
			continue
		}
		if err := sender.SendLog(ctx, b.Epoch, b.First, b.Count, b.Data); err != nil {
			p.mu.Lock()
			current := p.sender == sender
			p.mu.Unlock()
			if current && ctx.Err() == nil {
				p.degradeLater(fmt.Sprintf("sending the input log: %v", err))
			}
		}
	}
}

// onLogAck runs on the peer reader goroutine for every LogAck.
func (p *Primary) onLogAck(epoch, index uint64) {
	a := p.hybrid.log.Ack(hybridlog.Position{Epoch: epoch, Index: index})
	p.mu.Lock()
	defer p.mu.Unlock()
	if !a.Oldest.IsZero() {
		p.hybrid.roundTrip.add(ms(p.now().Sub(a.Oldest)))
	}
	p.hybrid.ackedSeq = max(p.hybrid.ackedSeq, a.Seq)
	p.releaseHybridLocked()
}

// sealLog marks the checkpoint of wire epoch in the log; it runs while the
// container is frozen.
func (p *Primary) sealLog(epoch uint64) error {
	at, err := p.hybrid.log.Seal(epoch)
	if err != nil {
		return err
	}
	p.hybrid.log.Wake() // the inputs drained before the seal: pumpLog sends them
	bytes := p.hybrid.log.Stats().Bytes
	p.mu.Lock()
	h := p.hybrid
	h.sealSeq[epoch] = at.Seq
	h.rate = append(h.rate, rateSample{p.now(), bytes})
	if len(h.rate) > rateSamples {
		h.rate = h.rate[1:]
	}
	p.mu.Unlock()
	return nil
}

// hybridCommitted: the backup committed the checkpoint of epoch.
func (p *Primary) hybridCommittedLocked(epoch uint64) {
	h := p.hybrid
	if seq, ok := h.sealSeq[epoch]; ok {
		h.coverSeq = max(h.coverSeq, seq)
	}
	for e := range h.sealSeq {
		if e <= epoch {
			delete(h.sealSeq, e)
		}
	}
	h.committed = true
	p.releaseHybridLocked()
}

// releaseHybridLocked releases the output the backup can reproduce: what a
// committed checkpoint covers, and, once one is committed on this
// connection, what the log it holds covers.
func (p *Primary) releaseHybridLocked() {
	h := p.hybrid
	switch p.sm.state {
	case StateSyncing, StateInSync, StateFailing: // failing checkpoints: the log still covers the output
	default:
		return // degraded (passing), superseded, failed or closed
	}
	if !h.committed {
		return
	}
	upTo := max(h.coverSeq, h.ackedSeq)
	if upTo <= h.released {
		return
	}
	if err := p.gate.Release(upTo); err != nil {
		p.log.Error("releasing output the backup's log covers", "seq", upTo, "err", err)
		return
	}
	h.released = upTo
}

// logStatusLocked is the log's part of the primary's status.
func (p *Primary) logStatusLocked() *LogStatus {
	if p.hybrid == nil {
		return nil
	}
	st := p.hybrid.log.Stats()
	ls := &LogStatus{Records: st.Records, Bytes: st.Bytes, Batches: st.Batches, Unacked: st.Unacked,
		Appended: st.Appended.String(), Acked: st.Acked.String()}
	ls.RoundTripMS = p.hybrid.roundTrip.summary()
	if r := p.hybrid.rate; len(r) > 0 {
		if dt := p.now().Sub(r[0].at).Seconds(); dt > 0 {
			ls.BytesPerSecond = float64(st.Bytes-r[0].bytes) / dt
		}
	}
	if !st.OldestUnacked.IsZero() {
		ls.OldestUnackedMS = ms(time.Since(st.OldestUnacked))
	}
	return ls
}

// LogStatus is the input log's part of the status (hybrid mode).
type LogStatus struct {
	Records         uint64  `json:"records"`                    // appended
	Bytes           uint64  `json:"bytes"`                      // handed to the peer channel
	BytesPerSecond  float64 `json:"bytes_per_second,omitempty"` // over the last checkpoints
	Batches         uint64  `json:"batches"`                    // frames
	Unacked         int     `json:"unacked"`                    // records the backup has not acknowledged
	OldestUnackedMS float64 `json:"oldest_unacked_ms,omitempty"`
	// RoundTripMS: a record appended → the backup's acknowledgement of it
	// (the first record of each batch: the longest wait in it).
	RoundTripMS Summary `json:"round_trip_ms"`
	Appended    string  `json:"appended"` // position of the last record (epoch.index)
	Acked       string  `json:"acked"`    // position the backup holds
}
