// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import "fmt"

// Rewrite changes a packet in place before it is accepted and reports
// whether it changed anything (after a hybrid failover: the sequence numbers
// of a connection the replay accepted again). It runs on a reader goroutine,
// must not keep p and must not change its length.
type Rewrite func(p []byte) bool

// acceptRewritten accepts pkts in order: runs of unchanged packets with one
// batch verdict each, a rewritten packet with a verdict that carries its new
// content. Packets the queue cut short are accepted as they are.
func acceptRewritten(q PacketQueue, pkts []Packet, rw Rewrite) error {
	if rw == nil {
		return q.VerdictBatch(pkts[len(pkts)-1].ID, Accept)
	}
	pending, last := false, uint32(0)
	for i := range pkts {
		p := &pkts[i]
		if len(p.Payload) != p.Len() || !rw(p.Payload) {
			pending, last = true, p.ID
			continue
		}
		if pending {
			if err := q.VerdictBatch(last, Accept); err != nil {
				return err
			}
			pending = false
		}
		if err := q.VerdictPayload(p.ID, Accept, p.Payload); err != nil {
			return fmt.Errorf("accept rewritten packet %d: %w", p.ID, err)
		}
	}
	if pending {
		return q.VerdictBatch(last, Accept)
	}
	return nil
}
