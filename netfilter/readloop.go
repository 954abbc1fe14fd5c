// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
)

// PacketQueue is what OutputGate and InputHold need of a queue: *Queue, or a
// fake in tests. Packet ids must increase (mod 2^32) in the order packets are
// read, and a batch verdict covers every queued packet up to its id, as the
// kernel's NFQNL_MSG_VERDICT_BATCH does.
type PacketQueue interface {
	ReadBatch(ctx context.Context, dst []Packet) (int, error)
	VerdictBatch(maxID uint32, v Verdict) error
	Verdict(id uint32, v Verdict) error
	VerdictPayload(id uint32, v Verdict, payload []byte) error
}

// readBatchSize bounds how many packets one verdict can answer in pass-through.
const readBatchSize = 256

// loopCounters are the reader's error counters, read by Stats without locks.
type loopCounters struct {
	overruns atomic.Uint64 // ENOBUFS: the kernel dropped packets it could not report
	rejected atomic.Uint64 // NLMSG_ERRORs: verdicts the kernel refused
}

// readLoop reads batches until ctx is done (then it returns nil) or the queue
// fails, and hands each non-empty batch to handle; an error from handle ends
// the loop. Overruns (the kernel dropped packets) and rejected verdicts are
// logged, counted and survived: neither releases a packet.
func readLoop(ctx context.Context, q PacketQueue, log *slog.Logger, c *loopCounters, handle func([]Packet) error) error {
	batch := make([]Packet, readBatchSize)
	for {
		n, err := q.ReadBatch(ctx, batch)
		if n > 0 {
			if herr := handle(batch[:n]); herr != nil {
				return herr
			}
		}
		var nlErr *NetlinkError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil //nolint:nilerr // the read ended because ctx was cancelled: a clean stop
		case IsOverrun(err):
			c.overruns.Add(1)
			log.Error("queue socket overrun: the kernel dropped packets (TCP will retransmit)", "err", err)
		case errors.As(err, &nlErr):
			c.rejected.Add(1)
			log.Warn("kernel rejected a verdict", "err", err)
		default:
			return err
		}
	}
}

var _ PacketQueue = (*Queue)(nil)
