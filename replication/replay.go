// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/hybridlog"
)

// Replay at a hybrid failover (docs/HYBRID.md): the restored container is
// fed the inputs the log holds after its checkpoint, in order, each only
// once the outputs logged before it have come out again (with a bound):
// the part of the original schedule that packets can enforce. Every output
// of the replayed container is judged by a hybridlog.Verifier.

// ReplayNetwork is the standby service network of a hybrid backup: a
// ServicePromoter that also carries the replay's packets while the service
// link is still cut off from the LAN.
type ReplayNetwork interface {
	ServicePromoter
	// JudgeOutputs routes every packet the restored container sends, from
	// now until Promote, through judge, one at a time and in order: kept
	// packets go out at Promote, in order; the others are dropped.
	JudgeOutputs(judge func(packet []byte) (keep bool))
	// Inject delivers a packet (from its IP header on) to the container as
	// if it came from the LAN.
	Inject(packet []byte) error
	// DropKept drops the kept packets whose first bytes (the IP header and
	// the ports) match.
	DropKept(match func(head []byte) bool) error
	// SendOut sends a packet (from its IP header on) to the LAN.
	SendOut(packet []byte) error
}

// ReplayReport is what a replay did.
type ReplayReport struct {
	Inputs, Outputs int           // fed, and judged
	Waits           int           // inputs whose preceding outputs did not all come out within the bound
	Duration        time.Duration //
	Diverged        map[hybridlog.FlowKey]string
	Pending         []hybridlog.FlowKey // flows whose logged outputs did not all come out again
	// Accepted are the connections accepted after the checkpoint: the
	// replay drew new initial sequence numbers for them.
	Accepted []hybridlog.FlowKey
}

// Resets are the connections a replay must reset on both sides: the
// diverged, the pending and those accepted after the checkpoint (whose
// sequence numbers are not translated after the replay).
func (r ReplayReport) Resets() []hybridlog.FlowKey {
	var out []hybridlog.FlowKey
	for k := range r.Diverged {
		out = append(out, k)
	}
	for _, k := range append(slices.Clone(r.Pending), r.Accepted...) {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// replayer runs one replay: run feeds the inputs, judge (called for every
// packet the container sends, from the restore on) checks the outputs.
type replayer struct {
	entries []hybridlog.Entry
	bound   time.Duration // limits each wait for outputs

	mu      sync.Mutex
	v       *hybridlog.Verifier
	outputs int
	// Per connection (as the container sees it): the acknowledgement the
	// container last sent and the end of the last input fed, the two
	// candidates for the sequence number its reset must carry.
	acked, fed map[hybridlog.FlowKey]uint32
	// sent: per connection, the end of the data the container has sent
	// since the restore (its sequence numbers), the bound of the
	// acknowledgements it accepts (input).
	sent     map[hybridlog.FlowKey]uint32
	progress chan struct{}
}

func newReplayer(entries []hybridlog.Entry, bound time.Duration) *replayer {
	return &replayer{entries: entries, bound: bound, v: hybridlog.NewVerifier(entries),
		acked: map[hybridlog.FlowKey]uint32{}, fed: map[hybridlog.FlowKey]uint32{}, sent: map[hybridlog.FlowKey]uint32{},
		progress: make(chan struct{}, 1)}
}

// judge is the verdict on one packet the container sent: keep it (for
// after the promotion) or drop it.
func (r *replayer) judge(p []byte) bool {
	r.mu.Lock()
	verdict := r.v.Output(p)
	r.outputs++
	if s, ok := hybridlog.ParseSegment(p); ok {
		if s.Flags&hybridlog.FlagACK != 0 {
			r.acked[s.Flow] = s.Ack
		}
		// Segments that occupy sequence space only: a pure ACK or a window
		// probe (at the first unacknowledged byte less one) says nothing of
		// how far the container has sent.
		if end, seen := r.sent[s.Flow]; s.End() != s.Seq && (!seen || int32(s.End()-end) > 0) {
			r.sent[s.Flow] = s.End()
		}
	}
	r.mu.Unlock()
	select {
	case r.progress <- struct{}{}:
	default:
	}
	return verdict == hybridlog.Send || verdict == hybridlog.Hold
}

// run feeds the inputs through inject and waits until every logged output
// came out again, or the bound passed after the last input.
func (r *replayer) run(ctx context.Context, inject func([]byte) error) (ReplayReport, error) {
	start := time.Now()
	var rep ReplayReport
	before := hybridlog.OutputsBefore(r.entries)
	for i, e := range r.entries {
		if e.Kind != hybridlog.KindInput {
			continue
		}
		ok, err := r.wait(ctx, before[i])
		if err != nil {
			return rep, err
		}
		if !ok {
			rep.Waits++
			r.giveUp(before[i])
		}
		if err := inject(r.input(e.Packet)); err != nil {
			return rep, fmt.Errorf("replaying input %s: %w", e.Position, err)
		}
		rep.Inputs++
	}
	if _, err := r.wait(ctx, r.v.Expected()); err != nil {
		return rep, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Outputs = r.outputs
	rep.Diverged, rep.Pending, rep.Accepted = r.v.Diverged(), r.v.Pending(), r.v.Accepted()
	rep.Duration = time.Since(start)
	return rep, nil
}

// input is the packet to feed for a logged input: a copy, with the
// acknowledgement translated for a connection accepted after the
// checkpoint (the client acknowledges the primary's sequence numbers).
func (r *replayer) input(p []byte) []byte {
	p = slices.Clone(p)
	s, ok := hybridlog.ParseSegment(p)
	if !ok {
		return p
	}
	k := hybridlog.FlowKey{Proto: s.Flow.Proto, Local: s.Flow.Peer, Peer: s.Flow.Local}
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.v.SeqDelta(k); d != 0 {
		hybridlog.ShiftAck(p, d)
		s, _ = hybridlog.ParseSegment(p)
	}
	// An acknowledgement of bytes the container has not sent (the primary
	// sent more, with its larger congestion window, or bytes the restored
	// socket holds as sent and has not sent again) makes its TCP discard
	// the whole segment, data included (RFC 793): what the client wrote
	// would be missing, and the container, never acknowledged, would send
	// nothing more. Acknowledge what it sent instead; the rest is
	// acknowledged by the client's later packets, or again after the
	// promotion.
	if end, ok := r.sent[k]; ok && s.Flags&hybridlog.FlagACK != 0 && int32(s.Ack-end) > 0 {
		hybridlog.ShiftAck(p, s.Ack-end)
	}
	if end, ok := r.fed[k]; !ok || int32(s.End()-end) > 0 {
		r.fed[k] = s.End()
	}
	return p
}

// wait waits until want outputs are covered or the bound passes.
func (r *replayer) wait(ctx context.Context, want int) (bool, error) {
	timer := time.NewTimer(r.bound)
	defer timer.Stop()
	for r.covered() < want {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timer.C:
			return false, nil
		case <-r.progress:
		}
	}
	return true, nil
}

// giveUp, after a wait for the first n outputs ran into the bound, stops
// waiting for the flows diverged so far (Verifier.Abandon: one bound is
// what a diverged flow whose replies changed length may cost) and for those
// n outputs (Verifier.GiveUp: one bound is what an output the restored
// socket does not send again may cost).
func (r *replayer) giveUp(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.v.Abandon()
	r.v.GiveUp(n)
}

func (r *replayer) covered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v.Covered()
}

// resets are the RSTs that end connections k on both sides: toContainer as
// from its client, at each sequence number the container may expect next
// (the one it does not expect draws a challenge ACK, which its other RST
// answers), and toClients as from the container, at the end of what the
// log says it sent (a client that did not get all of it challenges, and the
// container, reset by then, answers that with a RST the client accepts).
func (r *replayer) resets(ks []hybridlog.FlowKey) (toContainer, toClients [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range ks {
		if k.Proto != hybridlog.ProtoTCP || !k.Local.Addr().Is4() {
			continue
		}
		var seqs []uint32
		for _, m := range []map[hybridlog.FlowKey]uint32{r.fed, r.acked} {
			if s, ok := m[k]; ok && !slices.Contains(seqs, s) {
				seqs = append(seqs, s)
			}
		}
		for _, s := range seqs {
			toContainer = append(toContainer, hybridlog.Reset(k.Peer, k.Local, s))
		}
		if s, ok := r.v.SentEnd(k); ok {
			toClients = append(toClients, hybridlog.Reset(k.Local, k.Peer, s))
		}
	}
	return toContainer, toClients
}

// flowMatch matches the first bytes of a packet the container sent on one
// of ks.
func flowMatch(ks []hybridlog.FlowKey) func(head []byte) bool {
	set := map[hybridlog.FlowKey]bool{}
	for _, k := range ks {
		set[k] = true
	}
	return func(head []byte) bool {
		k, ok := hybridlog.SenderFlow(head)
		return ok && set[k]
	}
}
