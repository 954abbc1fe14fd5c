// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peer"
)

// promotion is the backup's takeover after the primary was declared
// failed, in this order:
//
//  1. stop receiving: no checkpoint may commit (or a returning primary
//     connect) while the current one is being restored;
//  2. take the last committed checkpoint (never a partial one: the store
//     only ever names complete, verified checkpoints, invariant 3 of
//     docs/ARCHITECTURE.md) and verify its files on disk against its
//     digest again: a checkpoint damaged since its commit is refused,
//     never restored;
//  3. prepare the standby namespace: CRIU's TCP repair needs a route to
//     the clients, which a down link does not have (see StandbyService);
//  4. restore the checkpoint while the service link is still down, so
//     nothing can answer a client (with a RST) before its socket exists;
//  5. bring the service link up and announce it (gratuitous ARP): the
//     clients' retransmissions reach the restored sockets.
//
// The primary's last, unacknowledged epochs are lost on purpose: its gate
// never let their output out, so no client saw them, and the restored TCP
// sockets resume from the checkpoint's sequence numbers.
type promotion struct {
	log           *slog.Logger
	now           clock
	stopReceiving func()
	current       func() (ckptstore.Checkpoint, bool)
	// verify checks the checkpoint's files before the restore; nil is
	// ckptstore.Checkpoint.Verify (SHA-256 of the files on disk).
	verify   func(ckptstore.Checkpoint) error
	restorer Restorer
	network  ServicePromoter
}

func (p promotion) run(ctx context.Context, f peer.PeerFailure) (RestoredContainer, FailoverTimings, error) {
	tm := FailoverTimings{LastHeard: f.LastHeard, DetectedAt: f.DetectedAt, DetectionMS: ms(f.DetectedAt.Sub(f.LastHeard))}
	log := p.log.With("step", "promote")
	log.Warn("primary declared failed; promoting", "last_heard", f.LastHeard.Format(time.RFC3339Nano),
		"detection", f.DetectedAt.Sub(f.LastHeard).Round(time.Microsecond), "reason", f.Reason)

	t := p.now()
	p.stopReceiving()
	tm.StopMS = ms(p.now().Sub(t))
	c, ok := p.current()
	if !ok {
		err := errors.New("no committed checkpoint to restore: the primary failed before the first one was acknowledged")
		log.Error("promotion impossible", "err", err)
		return RestoredContainer{}, tm, err
	}
	tm.Epoch = c.Epoch
	verify := p.verify
	if verify == nil {
		verify = ckptstore.Checkpoint.Verify
	}
	if err := verify(c); err != nil {
		log.Error("promotion refused: the last committed checkpoint does not verify; nothing restored, service link left down",
			"epoch", c.Epoch, "err", err)
		return RestoredContainer{}, tm, fmt.Errorf("refusing to restore checkpoint %d: %w", c.Epoch, err)
	}
	log.Info("restoring the last committed checkpoint", "epoch", c.Epoch, "bytes", c.Size,
		"committed", c.CommittedAt.Format(time.RFC3339Nano))

	t = p.now()
	if err := p.network.PrepareRestore(ctx); err != nil {
		log.Error("preparing the standby namespace for the restore", "err", err)
		return RestoredContainer{}, tm, fmt.Errorf("preparing the restore: %w", err)
	}
	tm.PrepareMS = ms(p.now().Sub(t))

	t = p.now()
	res, err := p.restorer.Restore(ctx, c)
	tm.RestoreMS = ms(p.now().Sub(t))
	if err != nil {
		log.Error("restore failed; service link left down", "epoch", c.Epoch, "err", err)
		return RestoredContainer{}, tm, fmt.Errorf("restoring checkpoint %d: %w", c.Epoch, err)
	}
	res.Epoch = c.Epoch
	log.Info("container restored; service link still down", "epoch", c.Epoch, "id", res.ID, "pid", res.Pid,
		"took", p.now().Sub(t).Round(time.Microsecond))

	t = p.now()
	if err := p.network.Promote(ctx); err != nil {
		log.Error("service network promotion failed; the restored container is unreachable", "err", err)
		return res, tm, fmt.Errorf("promoting the service network: %w", err)
	}
	end := p.now()
	tm.NetworkMS = ms(end.Sub(t))
	tm.TotalMS = ms(end.Sub(f.LastHeard))
	log.Warn("failover complete: the restored container is the service",
		"epoch", c.Epoch, "pid", res.Pid, "detection_ms", tm.DetectionMS, "restore_ms", tm.RestoreMS,
		"network_ms", tm.NetworkMS, "total_ms", tm.TotalMS)
	return res, tm, nil
}
