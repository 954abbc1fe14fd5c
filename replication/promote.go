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
	"github.com/iorrc/rrc/replication/hybridlog"
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
//     digest again, alongside steps 3 and 4: a checkpoint damaged since
//     its commit is never promoted (what was restored from it is
//     discarded, the link never comes up);
//  3. prepare the standby namespace: CRIU's TCP repair needs a route to
//     the clients, which a down link does not have (see StandbyService);
//  4. restore the checkpoint while the service link is still down, so
//     nothing can answer a client (with a RST) before its socket exists;
//  5. in hybrid mode, replay the log after the checkpoint, still cut off
//     from the LAN (replay.go, docs/HYBRID.md): the clients were told what
//     followed the checkpoint;
//  6. bring the service link up and announce it (gratuitous ARP): the
//     clients' retransmissions reach the restored sockets.
//
// In epoch mode the primary's last, unacknowledged epochs are lost on
// purpose: its gate never let their output out, so no client saw them, and
// the restored TCP sockets resume from the checkpoint's sequence numbers.
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
	// inputLog is, in hybrid mode, the log after the checkpoint of an epoch,
	// replayed between the restore and the promotion of the network (which
	// must then be a ReplayNetwork); nil in epoch mode.
	inputLog func(epoch uint64) ([]hybridlog.Entry, error)
	// fenceMS: declared failed → owner of the pair in the witness (0
	// unfenced); the promotion's time counts it.
	fenceMS float64
}

// replayBound limits each wait of a replay for the outputs that precede an
// input, and the wait for the last outputs: a replay that has not produced
// them by then has diverged (its connections are reset).
const replayBound = 200 * time.Millisecond

func (p promotion) run(ctx context.Context, f peer.PeerFailure) (RestoredContainer, FailoverTimings, error) {
	tm := FailoverTimings{LastHeard: f.LastHeard, DetectedAt: f.DetectedAt, DetectionMS: ms(f.DetectedAt.Sub(f.LastHeard)), FenceMS: p.fenceMS}
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
	verified := p.startVerify(c)
	log.Info("restoring the last committed checkpoint while its files are verified", "epoch", c.Epoch, "bytes", c.Size,
		"committed", c.CommittedAt.Format(time.RFC3339Nano))
	var rp *replayer
	var rn ReplayNetwork
	if p.inputLog != nil {
		var ok bool
		if rn, ok = p.network.(ReplayNetwork); !ok {
			err := errors.New("hybrid mode: the standby network cannot replay the log (no gate namespace); nothing restored")
			log.Error("promotion refused", "err", err)
			return RestoredContainer{}, tm, err
		}
		t = p.now()
		entries, err := p.inputLog(c.Epoch)
		tm.LogMS = ms(p.now().Sub(t))
		if err != nil {
			log.Error("promotion refused: the input log cannot be read", "err", err)
			return RestoredContainer{}, tm, fmt.Errorf("hybrid mode: %w; nothing restored", err)
		}
		rp = newReplayer(entries, replayBound)
		tm.Replay = &ReplayFigures{Records: len(entries)}
		// From the restore on: what the restored sockets send at once is
		// output of the replay too.
		rn.JudgeOutputs(rp.judge)
	}

	t = p.now()
	if err := p.network.PrepareRestore(ctx); err != nil {
		log.Error("preparing the standby namespace for the restore", "err", err)
		return RestoredContainer{}, tm, fmt.Errorf("preparing the restore: %w", err)
	}
	tm.PrepareMS = ms(p.now().Sub(t))

	t = p.now()
	res, err := p.restorer.Restore(ctx, c)
	tm.RestoreMS = ms(p.now().Sub(t))
	v := <-verified
	tm.VerifyMS = ms(v.took)
	if v.err != nil {
		if err == nil {
			if derr := p.restorer.Discard(ctx, res); derr != nil {
				log.Error("discarding the container restored from a checkpoint that does not verify", "err", derr)
			}
		}
		log.Error("promotion refused: the last committed checkpoint does not verify; nothing promoted, service link left down",
			"epoch", c.Epoch, "restored_and_discarded", err == nil, "err", v.err)
		return RestoredContainer{}, tm, fmt.Errorf("refusing to promote checkpoint %d: %w", c.Epoch, v.err)
	}
	if err != nil {
		log.Error("restore failed; service link left down", "epoch", c.Epoch, "err", err)
		return RestoredContainer{}, tm, fmt.Errorf("restoring checkpoint %d: %w", c.Epoch, err)
	}
	res.Epoch = c.Epoch
	log.Info("container restored; service link still down", "epoch", c.Epoch, "id", res.ID, "pid", res.Pid,
		"took", p.now().Sub(t).Round(time.Microsecond))

	var toClients [][]byte
	if rp != nil {
		t = p.now()
		var err error
		toClients, err = p.replay(ctx, rp, rn, tm.Replay)
		tm.ReplayMS = ms(p.now().Sub(t))
		if err != nil {
			log.Error("replay failed; service link left down", "err", err)
			return res, tm, fmt.Errorf("replaying the log after checkpoint %d: %w", c.Epoch, err)
		}
	}

	t = p.now()
	if err := p.network.Promote(ctx); err != nil {
		log.Error("service network promotion failed; the restored container is unreachable", "err", err)
		return res, tm, fmt.Errorf("promoting the service network: %w", err)
	}
	end := p.now()
	tm.NetworkMS = ms(end.Sub(t))
	for _, rst := range toClients {
		if err := rn.SendOut(rst); err != nil {
			// The client hears of it at its next packet (the container's
			// side is reset already).
			log.Warn("reset to a client not sent", "err", err)
		}
	}
	tm.TotalMS = ms(end.Sub(f.LastHeard))
	log.Warn("failover complete: the restored container is the service",
		"epoch", c.Epoch, "pid", res.Pid, "detection_ms", tm.DetectionMS, "fence_ms", tm.FenceMS, "restore_ms", tm.RestoreMS,
		"network_ms", tm.NetworkMS, "replay_ms", tm.ReplayMS, "total_ms", tm.TotalMS)
	return res, tm, nil
}

// verification is the outcome of a checkpoint's verification.
type verification struct {
	err  error
	took time.Duration
}

// startVerify checks c's files against its digest (verify, default
// ckptstore.Checkpoint.Verify) in the background: hashing every file of
// the checkpoint is tens of milliseconds the restore need not wait for,
// since nothing restored is reachable before the promotion joins it.
func (p promotion) startVerify(c ckptstore.Checkpoint) <-chan verification {
	verify := p.verify
	if verify == nil {
		verify = ckptstore.Checkpoint.Verify
	}
	out := make(chan verification, 1) // a promotion that fails first does not wait for it
	go func() {
		t := p.now()
		err := verify(c)
		out <- verification{err: err, took: p.now().Sub(t)}
	}()
	return out
}

// replay feeds the log to the restored container, then resets, on its
// side, the connections the replay could not carry on, and drops what they
// sent; it returns the resets for their clients, to send once the link is
// up.
func (p promotion) replay(ctx context.Context, rp *replayer, rn ReplayNetwork, fig *ReplayFigures) ([][]byte, error) {
	log := p.log.With("step", "replay")
	rep, err := rp.run(ctx, rn.Inject)
	fig.Inputs, fig.Outputs, fig.Waits = rep.Inputs, rep.Outputs, rep.Waits
	if err != nil {
		return nil, err
	}
	fig.Diverged, fig.Pending, fig.Accepted = len(rep.Diverged), len(rep.Pending), len(rep.Accepted)
	for k, why := range rep.Diverged {
		log.Warn("replay diverged: connection reset", "conn", k.String(), "why", why)
	}
	for _, k := range rep.Pending {
		log.Warn("replay did not reproduce what the connection released within the bound: connection reset", "conn", k.String(), "bound", replayBound)
	}
	resets := rep.Resets()
	fig.Reset = len(resets)
	if tr := rp.translator(resets); len(tr) > 0 {
		for k, t := range tr {
			log.Info("connection accepted after the checkpoint carries on translated", "conn", k.String(), "seq_delta", t.Seq, "ts_delta", t.TS, "timestamps", t.HasTS)
		}
		fig.Translated = len(tr)
		rn.Translate(tr.Outbound, tr.Inbound)
	}
	toContainer, toClients := rp.resets(resets)
	if err := rn.DropKept(flowMatch(resets)); err != nil {
		return nil, fmt.Errorf("dropping what the reset connections sent: %w", err)
	}
	for _, rst := range toContainer {
		if err := rn.Inject(rst); err != nil {
			return nil, fmt.Errorf("resetting a connection in the container: %w", err)
		}
	}
	log.Info("log replayed", "records", fig.Records, "inputs", fig.Inputs, "outputs", fig.Outputs, "waits", fig.Waits,
		"diverged", fig.Diverged, "pending", fig.Pending, "accepted", fig.Accepted, "translated", fig.Translated, "took", rep.Duration.Round(time.Microsecond))
	return toClients, nil
}
