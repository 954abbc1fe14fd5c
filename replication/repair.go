// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Re-pairing: how often a degraded primary dials its backup again.
const (
	repairBackoffMin = 250 * time.Millisecond
	repairBackoffMax = 5 * time.Second
)

// repair dials the configured backup until one answers (true) or the
// primary is closed or its gate stops (false). Then output is held again
// and the loop starts over with a full checkpoint: the backup is in sync
// once that is acknowledged, after one checkpoint pause of the container.
//
// The backup may be the same one (the primary had given up on it, e.g.
// after a heartbeat gap under load) or a new one at the same address. Its
// old checkpoint is stale (output was released unreplicated meanwhile); it
// must not promote before it commits one from this connection, which it
// knows: see Backup.
func (p *Primary) repair(ctx context.Context) bool {
	backoff := repairBackoffMin
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return false
		case err := <-p.packets.Failed():
			p.fail(fmt.Sprintf("packet gate stopped, container output is dropped: %v", err))
			return false
		case <-time.After(backoff):
		}
		p.retryDegraded()
		p.setRepairing(fmt.Sprintf("dialling the backup at %s (attempt %d)", p.cfg.Peer, attempt))
		sender, err := p.opts.Dial(ctx, p.peerOptions())
		if err != nil {
			p.setRepairing(fmt.Sprintf("attempt %d: %v", attempt, err))
			if attempt == 1 || attempt%10 == 0 {
				p.log.Warn("re-pairing with the backup: not yet", "attempt", attempt, "err", err)
			}
			backoff = min(2*backoff, repairBackoffMax)
			continue
		}
		if !p.adopt(sender, StateDegraded) {
			return false
		}
		p.mu.Lock()
		p.repairs++
		p.mu.Unlock()
		p.log.Info("re-paired with the backup: output held again, sending a full checkpoint",
			"attempt", attempt, "backup_committed", sender.BackupCommitted())
		return true
	}
}

// redial dials the backup once, at once, after a connection that ended by
// EOF or a reset rather than by the backup's silence: the backup may be
// fine and the path merely reset. Output stays held meanwhile. The backup
// takes such an end for its primary's failure once the detection bound has
// passed without a new connection (Backup.onDisconnected), so the dial is
// given that bound; if it fails, the primary goes degraded as for a lost
// backup. It reports whether replication goes on.
func (p *Primary) redial(ctx context.Context, reason string) bool {
	select {
	case <-p.peerFailed: // a failure reported by the old connection is history
	default:
	}
	opts := p.peerOptions()
	opts.HandshakeTimeout = max(p.cfg.Heartbeat*time.Duration(p.cfg.HeartbeatMisses), redialMin)
	p.log.Warn("connection to the backup lost; dialling it again at once, output held", "reason", reason)
	sender, err := p.opts.Dial(ctx, opts)
	if err != nil {
		p.log.Warn("dialling the backup again at once failed", "err", err)
		return false
	}
	if !p.adopt(sender, StateSyncing, StateInSync, StateFailing) { // failing: output held as in-sync
		return false
	}
	p.mu.Lock()
	p.redials++
	p.mu.Unlock()
	p.log.Info("reconnected to the backup without going degraded: sending a full checkpoint", "backup_committed", sender.BackupCommitted())
	return true
}

// redialMin is the least time redial gives a dial: TCP, the TLS handshake
// and Hellos, on a loaded host.
const redialMin = 100 * time.Millisecond

// adopt makes sender the connection to the backup if the primary is still
// in one of the states from (not closed, failed or superseded meanwhile):
// output is held again and epochs go on above what this backup holds.
func (p *Primary) adopt(sender CheckpointSender, from ...State) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(from, p.sm.state) || !p.sm.to(StateSyncing, "") {
		sender.Close()
		return false
	}
	// From here every packet is held again: it belongs to the open epoch,
	// which the coming full checkpoint seals.
	open := p.gate.Resume()
	if bc := sender.BackupCommitted(); open+p.offset <= bc {
		p.offset = bc - open + 1 // wire epochs must go on above what it holds
	}
	if p.hybrid != nil {
		p.hybrid.restart(open - 1 + p.offset)
	}
	select { // a failure reported by the old connection is history
	case <-p.peerFailed:
	default:
	}
	p.sender, p.repairing, p.unrecorded = sender, "", false
	p.taken = map[uint64]takenCheckpoint{}
	p.answeredAt = time.Time{}
	return true
}

func (p *Primary) setRepairing(s string) {
	p.mu.Lock()
	p.repairing = s
	p.mu.Unlock()
}
