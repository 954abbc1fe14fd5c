// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
)

// Verdict is what to do with a packet the replayed container sent.
type Verdict int

const (
	// Drop: the clients already have all of it (it matches what was
	// released), or it is a duplicate of bytes sent before the checkpoint.
	Drop Verdict = iota
	// Send: it carries something the clients have not seen, and everything
	// the flow released before was reproduced exactly.
	Send
	// Hold: it carries new bytes, but bytes the flow released before have
	// not all come out again yet; ask again (Verifier.Held) later.
	Hold
	// Diverged: the replay contradicts what the flow released; the
	// connection must be reset and nothing more of it sent.
	Diverged
)

func (v Verdict) String() string {
	return [...]string{"drop", "send", "hold", "diverged"}[v]
}

// FlowKey is a flow as the container sees it: its own address and port,
// the peer's, and the protocol.
type FlowKey struct {
	Proto       uint8
	Local, Peer netip.AddrPort
}

func (k FlowKey) String() string { return fmt.Sprintf("%d %s→%s", k.Proto, k.Local, k.Peer) }

// Reverse is the flow as the other end sees it: an input's flow named as
// its container's outputs name it, and back.
func (k FlowKey) Reverse() FlowKey { return FlowKey{Proto: k.Proto, Local: k.Peer, Peer: k.Local} }

// Verifier checks the outputs of a replay against the output records of the
// log (the digests of what the primary released). TCP flows are compared
// as byte streams: replayed bytes are placed by sequence number and every
// logged segment is checked once the bytes it covers are all there, so a
// replay that cuts the stream into other segments still verifies; ACK
// numbers, windows and pure ACKs are not compared (a replay acknowledges at
// other moments). Anything else is compared packet by packet, in order.
type Verifier struct {
	flows    map[FlowKey]*flowCheck
	order    []outputRef // the log's outputs that must reappear, in log order
	covered  int         // order[:covered] have reappeared, or were given up (GiveUp)
	diverged map[FlowKey]string
	// abandoned: diverged flows whose outputs Covered no longer waits for
	// (Abandon). The outputs of a diverged TCP flow are waited for until
	// then, by position only: the container must still consume the flow's
	// inputs one by one, as the primary did.
	abandoned map[FlowKey]bool
	// stalled: flows with an output given up (GiveUp) that had not come
	// out again; Covered no longer waits for their later outputs either.
	stalled map[FlowKey]bool
}

// outputRef is one logged output: its flow and its segment there.
type outputRef struct {
	flow *flowCheck
	seg  int
}

// flowCheck is one flow's logged outputs and what the replay sent so far.
type flowCheck struct {
	key  FlowKey
	tcp  bool
	base uint32 // TCP: sequence number of offset 0 (the first logged byte)
	// A connection accepted after the checkpoint starts with a SYN-ACK whose
	// initial sequence number the replay draws anew: its bytes are compared
	// by offset from each run's own SYN, and replayBase is the replay's.
	syn        bool
	replayBase uint32
	synSeen    bool
	segs       []segCheck
	end        int64  // TCP: offset after the last logged byte (a FIN counts one)
	bytes      []byte // TCP: replayed bytes by offset, [0, end)
	have       []bool // TCP: which offsets the replay has sent
	// contig: the replay has sent every offset below it; open: segs[:open]
	// are verified. Both only grow, so a stream sent in order costs each
	// byte and each segment once.
	contig int64
	open   int
	fins   map[int64]bool
	rsts   map[int64]bool
	next   int // not TCP: the next logged packet expected
}

// segCheck is one logged output of a flow.
type segCheck struct {
	off, len int64 // TCP: byte range; not TCP: unused
	flags    uint8
	hash     [16]byte
	whole    OutputDigest // not TCP
	ok       bool
}

// NewVerifier prepares the check of a replay of entries (the log after the
// restored checkpoint, in order); input records are skipped.
func NewVerifier(entries []Entry) *Verifier {
	v := &Verifier{flows: map[FlowKey]*flowCheck{}, diverged: map[FlowKey]string{}, abandoned: map[FlowKey]bool{}, stalled: map[FlowKey]bool{}}
	for _, e := range entries {
		if e.Kind != KindOutput {
			continue
		}
		d := e.Digest
		if d.Proto == ProtoTCP && d.Len == 0 && d.Flags == 0 {
			continue // a pure ACK: not compared
		}
		k := d.Flow()
		f := v.flows[k]
		if f == nil {
			f = &flowCheck{key: k, tcp: d.Proto == ProtoTCP, base: d.Seq, syn: d.Flags&FlagSYN != 0,
				fins: map[int64]bool{}, rsts: map[int64]bool{}}
			f.replayBase = f.base
			v.flows[k] = f
		}
		s := segCheck{flags: d.Flags, hash: d.Hash, whole: d}
		if f.tcp {
			s.off, s.len = int64(int32(d.Seq-f.base)), int64(d.Len)
			if s.off < 0 { // a retransmission of bytes before the first logged one
				s.len += s.off
				s.off = 0
				if s.len <= 0 && d.Flags == 0 {
					continue
				}
				s.hash = [16]byte{} // cut: only its range is known
			}
			end := s.off + max(s.len, 0)
			if d.Flags&(FlagFIN) != 0 {
				end++
			}
			f.end = max(f.end, end)
		}
		f.segs = append(f.segs, s)
		v.order = append(v.order, outputRef{flow: f, seg: len(f.segs) - 1})
	}
	for _, f := range v.flows {
		if f.tcp {
			f.bytes, f.have = make([]byte, f.end), make([]bool, f.end)
		}
	}
	return v
}

// Flow is the flow of a logged output, from the container's side.
func (d OutputDigest) Flow() FlowKey {
	return FlowKey{Proto: d.Proto, Local: netip.AddrPortFrom(d.Src, d.SrcPort), Peer: netip.AddrPortFrom(d.Dst, d.DstPort)}
}

// Output judges one packet the replayed container sent (from its IP header
// on).
func (v *Verifier) Output(p []byte) Verdict {
	d := Digest(p)
	k := d.Flow()
	f := v.flows[k]
	if _, bad := v.diverged[k]; bad {
		if f != nil && f.tcp {
			v.reached(f, p, d)
		}
		return Diverged
	}
	if f == nil {
		return Send // nothing of this flow was released after the checkpoint
	}
	if !f.tcp {
		return v.packet(f, d)
	}
	if f.syn && !f.synSeen {
		if d.Flags&FlagSYN == 0 {
			return v.diverge(f, "the replay sent data before the connection's SYN-ACK")
		}
		f.replayBase, f.synSeen = d.Seq, true
	}
	_, _, _, l4, _ := ipHeader(p)
	off := int64(int32(d.Seq - f.replayBase))
	payload := l4[int(l4[12]>>4)*4:]
	end := off + int64(len(payload))
	for i := max(off, 0); i < min(end, f.end); i++ {
		b := payload[i-off]
		if f.have[i] && f.bytes[i] != b && v.logged(f, i) {
			return v.diverge(f, fmt.Sprintf("byte at offset %d sent twice, differently", i))
		}
		f.bytes[i], f.have[i] = b, true
	}
	for f.contig < f.end && f.have[f.contig] {
		f.contig++
	}
	if d.Flags&FlagFIN != 0 {
		f.fins[end] = true
		end++
	}
	if d.Flags&FlagRST != 0 {
		f.rsts[off] = true
	}
	if why := v.check(f); why != "" {
		return v.diverge(f, why)
	}
	switch {
	case end <= f.end && d.Flags&FlagRST == 0:
		return Drop
	case v.verified(f):
		return Send
	default:
		return Hold
	}
}

// reached records where a packet of the diverged TCP flow f lies, not what
// it says: a logged segment whose range the replay has sent again counts as
// come out (Covered), so that the replay feeds the flow's next input only
// once the container answered the previous one. Fed earlier, the input
// would acknowledge bytes the container has not sent yet, which its TCP
// discards with the data (RFC 793: an ACK of something not yet sent), and
// what the client wrote after the divergence, acknowledged by the primary,
// would be missing from the restored state.
func (v *Verifier) reached(f *flowCheck, p []byte, d OutputDigest) {
	_, _, _, l4, _ := ipHeader(p)
	if len(l4) < 20 || (f.syn && !f.synSeen) {
		return
	}
	off := int64(int32(d.Seq - f.replayBase))
	end := off + int64(len(l4)-int(l4[12]>>4)*4)
	for i := max(off, 0); i < min(end, f.end); i++ {
		f.have[i] = true
	}
	for f.contig < f.end && f.have[f.contig] {
		f.contig++
	}
	if d.Flags&FlagFIN != 0 {
		f.fins[end] = true
	}
	v.reach(f)
	v.advance()
}

// reach marks the segments of the diverged flow f whose range the replay
// has sent again as come out, whatever their bytes.
func (v *Verifier) reach(f *flowCheck) {
	for i := f.open; i < len(f.segs); i++ {
		s := &f.segs[i]
		if s.ok || !f.has(s.off, s.off+max(s.len, 0)) || (s.flags&FlagFIN != 0 && !f.fins[s.off+s.len]) {
			continue
		}
		s.ok = true
	}
}

// Abandon stops waiting for the outputs of the flows diverged so far: a
// replay calls it when a wait ran into its bound (a diverged reply of
// another length never reaches the logged positions).
func (v *Verifier) Abandon() {
	for k := range v.diverged {
		v.abandoned[k] = true
	}
	v.advance()
}

// GiveUp counts the log's first n outputs as covered whether or not they
// came out again: a replay calls it when a wait for them ran into its
// bound, so that later inputs do not wait for them again. A restored
// socket may never send some logged bytes again: bytes the container had
// written before the checkpoint but TCP had not sent yet are restored as
// sent, and go out only at a retransmission timeout, or never once the
// client's logged acknowledgement is fed. Waiting the bound before every
// later input for them made a lighttpd replay take tens of seconds.
// Their flows stay unverified (Pending) unless the bytes do come out, and
// Covered no longer waits for their later outputs: a flow whose socket has
// stopped sending costs one bound, not one per later input.
func (v *Verifier) GiveUp(n int) {
	n = min(n, len(v.order))
	for _, r := range v.order[min(v.covered, n):n] {
		if !r.flow.segs[r.seg].ok {
			v.stalled[r.flow.key] = true
		}
	}
	v.covered = max(v.covered, n)
	v.advance()
}

// packet compares a packet that is not TCP with the flow's next logged one.
func (v *Verifier) packet(f *flowCheck, d OutputDigest) Verdict {
	if f.next == len(f.segs) {
		return Send
	}
	if !f.segs[f.next].whole.Equal(d) {
		return v.diverge(f, fmt.Sprintf("packet %d is %v, the primary sent %v", f.next+1, d, f.segs[f.next].whole))
	}
	f.segs[f.next].ok = true
	f.next++
	v.advance()
	return Drop
}

// logged reports whether offset i lies in a logged segment with a known
// hash (only those bytes are bound to what was released).
func (v *Verifier) logged(f *flowCheck, i int64) bool {
	for _, s := range f.segs {
		if s.hash != ([16]byte{}) && i >= s.off && i < s.off+s.len {
			return true
		}
	}
	return false
}

// check verifies the logged segments whose bytes are now all there; it
// returns why the flow diverged, or "".
func (v *Verifier) check(f *flowCheck) string {
	for f.open < len(f.segs) && f.segs[f.open].ok {
		f.open++
	}
	for i := f.open; i < len(f.segs); i++ {
		s := &f.segs[i]
		if s.ok || !f.has(s.off, s.off+max(s.len, 0)) {
			continue
		}
		if s.flags&FlagFIN != 0 && !f.fins[s.off+s.len] {
			continue
		}
		if s.flags&FlagRST != 0 && !f.rsts[s.off] {
			continue
		}
		if s.hash != ([16]byte{}) && s.len > 0 {
			h := sha256.Sum256(f.bytes[s.off : s.off+s.len])
			if [16]byte(h[:16]) != s.hash {
				return fmt.Sprintf("bytes at sequence %d+%d differ from what the primary released", f.base+uint32(s.off), s.len)
			}
		}
		s.ok = true
	}
	v.advance()
	return ""
}

func (f *flowCheck) has(from, to int64) bool {
	for i := max(from, f.contig); i < to; i++ {
		if !f.have[i] {
			return false
		}
	}
	return true
}

func (v *Verifier) verified(f *flowCheck) bool {
	for _, s := range f.segs[f.open:] {
		if !s.ok {
			return false
		}
	}
	return true
}

// advance moves Covered over the outputs that came out again (for a
// diverged TCP flow: at their positions, reached) and over those of the
// other diverged flows, the abandoned and the stalled ones, which will not.
func (v *Verifier) advance() {
	for v.covered < len(v.order) {
		r := v.order[v.covered]
		_, bad := v.diverged[r.flow.key]
		skip := (bad && (!r.flow.tcp || v.abandoned[r.flow.key])) || v.stalled[r.flow.key]
		if !skip && !r.flow.segs[r.seg].ok {
			return
		}
		v.covered++
	}
}

func (v *Verifier) diverge(f *flowCheck, why string) Verdict {
	if _, ok := v.diverged[f.key]; !ok {
		v.diverged[f.key] = why
		if f.tcp {
			v.reach(f) // the segment that diverged has come out
		}
		v.advance()
	}
	return Diverged
}

// Covered is how many of the log's outputs (in log order, pure ACKs left
// out) have reappeared: a replay feeds the next input only once the
// outputs logged before it are covered.
func (v *Verifier) Covered() int { return v.covered }

// Expected is how many of the log's outputs must reappear.
func (v *Verifier) Expected() int { return len(v.order) }

// OutputsBefore is, for each entry, how many outputs (in log order, as
// Covered counts them) must have reappeared before it is fed. For an input
// of a TCP or UDP flow, the outputs of other flows before it, and its own
// flow's but the last slack of them: a connection's requests are pipelined
// up to slack answers ahead, which its application reads in order as on
// the primary, while the interleaving between connections (what one saw of
// another's effects) is kept. Any other input waits for every output
// before it. The prefix counts make it conservative: an output of another
// flow after the input's own answers waits for those answers too.
func OutputsBefore(entries []Entry, slack int) []int {
	out := make([]int, len(entries))
	n := 0
	// The latest run of outputs of one flow began after n reached runStart.
	var runKey FlowKey
	runStart := 0
	after := map[FlowKey][]int{} // per flow: n after each of its last slack+1 outputs
	for i, e := range entries {
		out[i] = n
		switch {
		case e.Kind == KindOutput:
			if e.Digest.Proto == ProtoTCP && e.Digest.Len == 0 && e.Digest.Flags == 0 {
				continue // pure ACKs are not waited for
			}
			k, ok := outputFlow(e.Digest)
			if !ok || k != runKey {
				runKey, runStart = k, n
			}
			n++
			if ok {
				a := append(after[k], n)
				if len(a) > slack+1 {
					a = a[1:]
				}
				after[k] = a
			}
		default:
			k, ok := inputFlow(e.Packet)
			if !ok || k != runKey {
				continue // the last output is another flow's
			}
			need := runStart
			if a := after[k]; len(a) > slack {
				need = max(need, a[0])
			}
			out[i] = need
		}
	}
	return out
}

// outputFlow is the flow of a logged TCP or UDP output.
func outputFlow(d OutputDigest) (FlowKey, bool) {
	if d.Proto != ProtoTCP && d.Proto != ProtoUDP {
		return FlowKey{}, false
	}
	return d.Flow(), true
}

// inputFlow is the flow of a TCP or UDP input as its outputs name it (from
// the container's side).
func inputFlow(p []byte) (FlowKey, bool) {
	k, ok := SenderFlow(p)
	if !ok {
		return FlowKey{}, false
	}
	return k.Reverse(), true
}

// Diverged lists the flows whose replay contradicted what they released,
// with the reason.
func (v *Verifier) Diverged() map[FlowKey]string { return v.diverged }

// Pending lists the flows with logged outputs that have not reappeared.
func (v *Verifier) Pending() []FlowKey {
	var out []FlowKey
	for k, f := range v.flows {
		if _, bad := v.diverged[k]; !bad && !v.verified(f) {
			out = append(out, k)
		}
	}
	return out
}

// SeqDelta is what to add to the sequence numbers the replayed connection
// sends (and subtract from the acknowledgements its client sends) so that
// they continue the primary's: non-zero for a connection accepted after the
// checkpoint, whose initial sequence number the replay drew anew.
func (v *Verifier) SeqDelta(k FlowKey) uint32 {
	if f := v.flows[k]; f != nil {
		return f.base - f.replayBase
	}
	return 0
}

// SentEnd is the sequence number after the last byte (or FIN) the log says
// the container sent on TCP flow k, in the primary's numbering: where its
// client's next expected sequence number is, at most.
func (v *Verifier) SentEnd(k FlowKey) (uint32, bool) {
	f := v.flows[k]
	if f == nil || !f.tcp {
		return 0, false
	}
	return f.base + uint32(f.end), true
}

// Accepted lists the TCP connections accepted after the checkpoint (their
// logged outputs begin with the SYN-ACK).
func (v *Verifier) Accepted() []FlowKey {
	var out []FlowKey
	for k, f := range v.flows {
		if f.syn {
			out = append(out, k)
		}
	}
	return out
}
