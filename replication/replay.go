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
	// Translate rewrites, from Promote on, every packet the container sends
	// (outbound) and every packet it receives (inbound), for the rest of
	// their lives: each reports whether it changed the packet.
	Translate(outbound, inbound func(packet []byte) bool)
}

// ReplayReport is what a replay did.
type ReplayReport struct {
	Inputs, Outputs int           // fed, and judged
	Waits           int           // inputs whose preceding outputs did not all come out within the bound
	Duration        time.Duration //
	Diverged        map[hybridlog.FlowKey]string
	Pending         []hybridlog.FlowKey // flows whose logged outputs did not all come out again
	// Accepted are the connections accepted after the checkpoint: the
	// replay drew new initial sequence numbers (and timestamps) for them,
	// which the gate translates from now on unless they are reset.
	Accepted []hybridlog.FlowKey
}

// Resets are the connections a replay must reset on both sides: the
// diverged and the pending.
func (r ReplayReport) Resets() []hybridlog.FlowKey {
	var out []hybridlog.FlowKey
	for k := range r.Diverged {
		out = append(out, k)
	}
	for _, k := range r.Pending {
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
	// budget limits the time all waits that ran into the bound may take
	// together; after it the inputs are fed without waiting. The waits buy
	// the original interleaving, not safety (every output is judged), and
	// a failover must not last a bound per input (docs/HYBRID.md).
	budget time.Duration

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
	sent map[hybridlog.FlowKey]uint32
	// The SYN-ACK of each connection accepted after the checkpoint, in the
	// primary's run (its time from the log, its timestamp from the client's
	// echo) and in the replay: what maps one run's timestamps on the other's.
	origSynAck, replaySynAck map[hybridlog.FlowKey]stamp
	progress                 chan struct{}
}

// stamp is a TCP timestamp (TSval, ms) and when it was sent.
type stamp struct {
	ts    uint32
	hasTS bool
	at    time.Time
}

func newReplayer(entries []hybridlog.Entry, bound time.Duration) *replayer {
	r := &replayer{entries: entries, bound: bound, budget: replayBudgetBounds * bound, v: hybridlog.NewVerifier(entries),
		acked: map[hybridlog.FlowKey]uint32{}, fed: map[hybridlog.FlowKey]uint32{}, sent: map[hybridlog.FlowKey]uint32{},
		origSynAck: map[hybridlog.FlowKey]stamp{}, replaySynAck: map[hybridlog.FlowKey]stamp{},
		progress: make(chan struct{}, 1)}
	for _, e := range entries {
		if d := e.Digest; e.Kind == hybridlog.KindOutput && d.Proto == hybridlog.ProtoTCP && d.Flags&hybridlog.FlagSYN != 0 {
			r.origSynAck[d.Flow()] = stamp{at: e.At}
		}
	}
	return r
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
		if _, seen := r.replaySynAck[s.Flow]; !seen && s.Flags&hybridlog.FlagSYN != 0 && s.Flags&hybridlog.FlagACK != 0 {
			val, _, ok := hybridlog.Timestamps(p)
			r.replaySynAck[s.Flow] = stamp{ts: val, hasTS: ok, at: time.Now()}
		}
		// Only segments that occupy sequence space count: a pure ACK or a
		// window probe (at the first unacknowledged byte less one) says
		// nothing of how far the container has sent.
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
	var spent time.Duration // in waits that ran into the bound
	pipelined := hybridlog.OutputsBefore(r.entries, replayPipeline)
	strict := hybridlog.OutputsBefore(r.entries, 0)
	for i, e := range r.entries {
		if e.Kind != hybridlog.KindInput {
			continue
		}
		before := strict
		if r.hasSent(e.Packet) {
			before = pipelined
		}
		if spent < r.budget {
			ok, err := r.wait(ctx, before[i])
			if err != nil {
				return rep, err
			}
			if !ok {
				rep.Waits++
				spent += r.bound
				r.giveUp(before[i])
			}
		}
		if err := inject(r.input(e.Packet)); err != nil {
			return rep, fmt.Errorf("replaying input %s: %w", e.Position, err)
		}
		rep.Inputs++
	}
	// The last wait also waits for the flows given up on: a restored socket
	// sends the bytes it holds as sent at its first retransmission timeout
	// (at least 200 ms after the restore), which the bound alone can miss.
	settled := func() bool { return r.covered() >= r.v.Expected() && r.pending() == 0 }
	deadline := time.Now().Add(r.bound)
	if d := start.Add(replaySettleBounds * r.bound); d.After(deadline) {
		deadline = d
	}
	if _, err := r.waitUntil(ctx, settled, deadline); err != nil {
		return rep, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Outputs = r.outputs
	rep.Diverged, rep.Pending, rep.Accepted = r.v.Diverged(), r.v.Pending(), r.v.Accepted()
	rep.Duration = time.Since(start)
	return rep, nil
}

// hasSent reports whether the container has sent data on p's connection
// since the restore. Only then can an input be fed ahead of its own
// connection's answers: its acknowledgement of answers not sent yet is
// lowered to what was sent (input), and before anything was sent the
// replay cannot tell what the restored socket would accept.
func (r *replayer) hasSent(p []byte) bool {
	s, ok := hybridlog.ParseSegment(p)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, sent := r.sent[s.Flow.Reverse()]
	return sent
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
	k := s.Flow.Reverse()
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.origSynAck[k]; ok && !o.hasTS && s.Flags&hybridlog.FlagACK != 0 && s.Flags&hybridlog.FlagSYN == 0 {
		// The client's first acknowledgement echoes the SYN-ACK's timestamp.
		if _, ecr, ok := hybridlog.Timestamps(p); ok {
			o.ts, o.hasTS = ecr, true
			r.origSynAck[k] = o
		}
	}
	if tr, ok := r.translation(k, false); ok {
		hybridlog.Translator{k: tr}.Inbound(p)
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
		hybridlog.SetAck(p, end)
	}
	if end, ok := r.fed[k]; !ok || int32(s.End()-end) > 0 {
		r.fed[k] = s.End()
	}
	return p
}

// translation maps connection k, accepted after the checkpoint, from the
// replay's numbering onto the primary's; ok is false for any other.
// Timestamps are mapped at the SYN-ACK during the replay (the client's
// echoes become the replay's own), and by the wall clock after it: the
// container then sends what the primary would have sent at the same moment,
// never older than what its client saw (which the client's PAWS check would
// drop).
func (r *replayer) translation(k hybridlog.FlowKey, after bool) (hybridlog.Translation, bool) {
	o, accepted := r.origSynAck[k]
	if !accepted {
		return hybridlog.Translation{}, false
	}
	tr := hybridlog.Translation{Seq: r.v.SeqDelta(k)}
	if rs, ok := r.replaySynAck[k]; ok && rs.hasTS && o.hasTS {
		tr.TS, tr.HasTS = o.ts-rs.ts, true
		if after {
			tr.TS += uint32(rs.at.Sub(o.at).Milliseconds())
		}
	}
	return tr, true
}

// translator is the translation, after the replay, of the connections
// accepted after the checkpoint that carry on (ks are reset).
func (r *replayer) translator(reset []hybridlog.FlowKey) hybridlog.Translator {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := hybridlog.Translator{}
	for k := range r.origSynAck {
		if _, replayed := r.replaySynAck[k]; !replayed || slices.Contains(reset, k) {
			continue
		}
		if tr, ok := r.translation(k, true); ok {
			t[k] = tr
		}
	}
	return t
}

// replayPipeline is how many of its own answers a connection's input may be
// fed ahead of (hybridlog.OutputsBefore): a busy client's requests replay
// at the application's pace instead of one round trip each.
const replayPipeline = 16

// replayBudgetBounds is the replay's waiting budget, in bounds.
const replayBudgetBounds = 5

// replaySettleBounds is how long after its start a replay waits for the
// outputs of flows given up on, in bounds: past the restored sockets' first
// retransmission (criu.PrimeTCPMetrics keeps their RTO at 200 ms).
const replaySettleBounds = 2

// wait waits until want outputs are covered or the bound passes.
func (r *replayer) wait(ctx context.Context, want int) (bool, error) {
	return r.waitUntil(ctx, func() bool { return r.covered() >= want }, time.Now().Add(r.bound))
}

// waitUntil waits until done or the deadline; ok says whether done.
func (r *replayer) waitUntil(ctx context.Context, done func() bool, deadline time.Time) (bool, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for !done() {
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

func (r *replayer) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.v.Pending())
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
