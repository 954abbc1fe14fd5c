// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/iorrc/rrc/replication/peer"
)

// ackStall says whether an acknowledgement has been outstanding longer
// than Config.AckTimeout: a checkpoint the backup has not answered since
// it was taken (nor anything else since then), or in hybrid mode a log
// record it has not acknowledged. Its heartbeats may still come (its
// reader or disk is stuck): the output would be held for ever. The caller
// treats it as the backup's failure.
func (p *Primary) ackStall(now time.Time) (reason string, stalled bool) {
	bound := p.cfg.AckTimeout
	p.mu.Lock()
	var oldest uint64
	var oldestAt time.Time
	for e, tc := range p.taken {
		if oldestAt.IsZero() || tc.at.Before(oldestAt) {
			oldest, oldestAt = e, tc.at
		}
	}
	since := oldestAt
	if p.answeredAt.After(since) {
		since = p.answeredAt // it answers, if slowly: wait from its last answer
	}
	p.mu.Unlock()
	if !oldestAt.IsZero() && now.Sub(since) > bound {
		return fmt.Sprintf("acknowledgement stalled: checkpoint %d taken %s ago is not acknowledged and the backup has answered nothing for %s (bound %s): its reader or disk is stuck",
			oldest, now.Sub(oldestAt).Round(time.Millisecond), now.Sub(since).Round(time.Millisecond), bound), true
	}
	if p.hybrid != nil {
		if st := p.hybrid.log.Stats(); !st.OldestUnacked.IsZero() && now.Sub(st.OldestUnacked) > bound {
			return fmt.Sprintf("acknowledgement stalled: %d input log records unacknowledged, the oldest for %s (bound %s): the backup's reader or disk is stuck",
				st.Unacked, now.Sub(st.OldestUnacked).Round(time.Millisecond), bound), true
		}
	}
	return "", false
}

// degradeLater asks the loop to go degraded; callbacks must not block.
func (p *Primary) degradeLater(reason string) {
	select {
	case p.peerFailed <- reason:
	default: // one reason pending is enough
	}
}

// onAck runs on the peer reader goroutine for every answer of the backup.
// Output of an epoch is released here and nowhere else (but ReleaseAll).
func (p *Primary) onAck(a peer.Ack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	taken, known := p.taken[a.Epoch]
	delete(p.taken, a.Epoch)
	p.answeredAt = a.At
	if a.Err == nil {
		for e := range p.taken { // aborted transfers are never answered
			if e < a.Epoch {
				delete(p.taken, e)
			}
		}
	}
	switch p.sm.state {
	case StateDegraded, StateClosed, StateSuperseded:
		return
	}
	if a.Err != nil {
		var nack *peer.NackError
		if errors.As(a.Err, &nack) {
			// The output stays held; a later acknowledged epoch releases it.
			p.nacks++
			p.log.Error("backup refused a checkpoint; its output waits for the next", "epoch", a.Epoch, "consecutive_failures", p.streak+1, "err", a.Err)
			p.failureLocked(a.Err)
		}
		return
	}
	if a.Epoch <= p.acked || a.Epoch <= p.offset {
		return
	}
	if p.hybrid != nil {
		p.hybridCommittedLocked(a.Epoch)
	} else if err := p.gate.Release(a.Epoch - p.offset); err != nil {
		// Nothing was released; a later ack retries (Release covers
		// every earlier epoch).
		p.log.Error("releasing output of an acknowledged epoch", "epoch", a.Epoch, "err", err)
		return
	}
	p.acked, p.ackedAt = a.Epoch, a.At
	if known {
		p.ackedTaken = taken.at
		p.ackLat.add(ms(a.At.Sub(taken.at)))
		p.recordEpoch(EpochFigures{Epoch: a.Epoch, PauseMS: ms(taken.pause), AckMS: ms(a.At.Sub(taken.at))})
	}
	after := p.streak
	p.streak, p.lastFailure = 0, ""
	if p.sm.to(StateInSync, "") { // from syncing or failing
		p.log.Info("backup in sync", "epoch", a.Epoch, "after_failed_checkpoints", after)
		p.clearMarkLocked()
	}
}

// failingHolds says what waits while checkpoints fail.
func (p *Primary) failingHolds() string {
	if p.hybrid != nil {
		return "the log a failover would replay grows until one is acknowledged"
	}
	return "output held until one is acknowledged"
}

// failureLocked counts a failed or refused checkpoint in the current run
// and, past the configured bound (Config.FailingAfterFailures or
// FailingAfter since the run began), moves to failing so that the operator
// sees it. Nothing here releases output: it stays held (fail closed) until
// a checkpoint is acknowledged.
func (p *Primary) failureLocked(err error) {
	now := p.now()
	if p.streak == 0 {
		p.streakSince = now
	}
	p.streak++
	p.lastFailure = err.Error()
	lasted := now.Sub(p.streakSince)
	if p.streak < uint64(p.cfg.FailingAfterFailures) && lasted < p.cfg.FailingAfter {
		return
	}
	entering := p.sm.state != StateFailing
	reason := fmt.Sprintf("%d consecutive checkpoints failed in %s, %s; last: %s", p.streak, lasted.Round(time.Millisecond), p.failingHolds(), p.lastFailure)
	if p.sm.to(StateFailing, reason) && entering { // not from degraded, superseded, failed, closed
		p.log.Error("checkpoints keep failing: state failing", "consecutive_failures", p.streak, "for", lasted, "bound_failures", p.cfg.FailingAfterFailures, "bound_time", p.cfg.FailingAfter, "err", err)
	}
}

// takenCheckpoint is a checkpoint sent and not answered yet.
type takenCheckpoint struct {
	at    time.Time
	pause time.Duration
}

// recentEpochs bounds Status.RecentEpochs: with the status file rewritten
// every second, a reader that copies it as often misses none at epochs of
// 16 ms and longer.
const recentEpochs = 64

// recordEpoch keeps the figures of an acknowledged checkpoint; p.mu held.
func (p *Primary) recordEpoch(f EpochFigures) {
	if len(p.recent) == recentEpochs {
		p.recent = append(p.recent[:0], p.recent[1:]...)
	}
	p.recent = append(p.recent, f)
}
