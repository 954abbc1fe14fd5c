// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
)

// staleAfter: a shim rewrites its status file at least every second; an
// older file means the shim is gone (crashed host, killed shim).
const staleAfter = 5 * time.Second

// describe gives the STATE, COMMITTED and LAG columns.
func describe(st status.Published, now time.Time) (state, committed, lag string) {
	e := st.Engine
	state = string(e.State)
	if age := now.Sub(st.UpdatedAt); age > staleAfter {
		state += fmt.Sprintf(" (stale: not updated for %s)", age.Round(time.Second))
	}
	committed, lag = "-", "-"
	if e.CommittedEpoch > 0 {
		committed = fmt.Sprint(e.CommittedEpoch)
		if e.State == replication.StateInSync {
			lag = fmt.Sprintf("%.0fms", e.LagMS)
		}
	}
	return state, committed, lag
}

// detailLines say why a pair is not in sync and, after a failover, how long
// each step took.
func detailLines(id string, st status.Published) []string {
	e := st.Engine
	var out []string
	if e.Reason != "" {
		out = append(out, fmt.Sprintf("%s: %s", id, e.Reason))
	}
	out = append(out, id+": "+fencing(e))
	if e.Role == replication.RolePrimary && e.Epochs > 0 {
		out = append(out, fmt.Sprintf("%s: %d epochs (%d deferred, %d skipped, %d failed), pause ms mean %.1f p90 %.1f, ack ms mean %.1f, bytes/epoch %.0f (sent %.0f, memory copied in the pause %.0f)",
			id, e.Epochs, e.DeferredEpochs, e.SkippedEpochs, e.FailedEpochs, e.PauseMS.Mean, e.PauseMS.P90, e.AckMS.Mean, e.BytesPerEpoch.Mean, e.SentPerEpoch.Mean, e.MemoryCopiedPerEpoch.Mean))
	}
	if e.IdleTicks > 0 {
		// io.rrc.skip-idle: the lag grows while nothing enters or leaves.
		out = append(out, fmt.Sprintf("%s: %d tick(s) took no checkpoint: no packet in or out since the last committed one", id, e.IdleTicks))
	}
	if e.ConsecutiveFailures > 0 {
		// The alarm: output is held by failed checkpoints (state failing
		// once past the bound, io.rrc.failing-after[-failures]).
		out = append(out, fmt.Sprintf("%s: ALARM: %d checkpoint(s) failed in a row, none acknowledged since; last: %s", id, e.ConsecutiveFailures, e.LastFailure))
	}
	if l := e.Log; l != nil {
		if e.Role == replication.RolePrimary {
			out = append(out, fmt.Sprintf("%s: %s mode log: %d records, %d bytes in %d batches (%.0f bytes/s), round trip ms mean %.2f p90 %.2f, %d unacknowledged (oldest %.1f ms), appended %s, backup holds %s, last checkpoint at epoch %d",
				id, e.Mode, l.Records, l.Bytes, l.Batches, l.BytesPerSecond, l.RoundTripMS.Mean, l.RoundTripMS.P90, l.Unacked, l.OldestUnackedMS, l.Appended, l.Acked, e.CommittedEpoch))
		} else {
			out = append(out, fmt.Sprintf("%s: %s mode log held: %d records, %d bytes, up to %s", id, e.Mode, l.Records, l.Bytes, l.Acked))
		}
	}
	if e.Redials > 0 {
		out = append(out, fmt.Sprintf("%s: connection to the backup lost and dialled again at once %d time(s), output held", id, e.Redials))
	}
	if e.Repairs > 0 {
		out = append(out, fmt.Sprintf("%s: re-paired with a backup %d time(s) after running degraded", id, e.Repairs))
	}
	if f := e.Failover; f != nil {
		fence := ""
		if f.FenceMS > 0 {
			fence = fmt.Sprintf("fence %.1f ms, ", f.FenceMS)
		}
		logRead := ""
		if f.LogMS > 0 {
			logRead = fmt.Sprintf("log read %.1f ms, ", f.LogMS)
		}
		out = append(out, fmt.Sprintf("%s: failover from epoch %d: detection %.1f ms, %sstop %.1f ms, %sprepare %.1f ms, restore %.1f ms (its files verified meanwhile in %.1f ms), network %.1f ms, total %.1f ms (last heard %s)",
			id, f.Epoch, f.DetectionMS, fence, f.StopMS, logRead, f.PrepareMS, f.RestoreMS, f.VerifyMS, f.NetworkMS, f.TotalMS, f.LastHeard.UTC().Format(time.RFC3339Nano)))
		if r := f.Replay; r != nil {
			out = append(out, fmt.Sprintf("%s: replay of the log after the checkpoint: %.1f ms, %d records, %d inputs fed, %d outputs judged, %d waits; connections reset: %d (%d diverged, %d pending); accepted after the checkpoint: %d (%d translated)",
				id, f.ReplayMS, r.Records, r.Inputs, r.Outputs, r.Waits, r.Reset, r.Diverged, r.Pending, r.Accepted, r.Translated))
		}
	}
	if r := e.Restored; r != nil {
		out = append(out, fmt.Sprintf("%s: restored container pid %d from epoch %d", id, r.Pid, r.Epoch))
	}
	return out
}

// fencing says whether a witness fences the pair (docs/FENCING.md) and
// how this side holds it.
func fencing(e replication.Status) string {
	f := e.Fence
	if f == nil {
		return "unfenced (no witness: a cut link between the hosts can make both sides serve; docs/FENCING.md)"
	}
	switch {
	case f.Lost:
		return fmt.Sprintf("fenced by %s (%s): the other side owns the pair", f.Witness, f.Key)
	case f.Lease == "":
		return fmt.Sprintf("fenced by %s (%s): this side does not own the pair", f.Witness, f.Key)
	case !f.Held:
		return fmt.Sprintf("fenced by %s (lease %s, ttl %.0f ms): LAPSED, not renewed since %s: output held", f.Witness, f.Lease, f.TTLMS, f.HeldUntil.UTC().Format(time.RFC3339Nano))
	}
	s := fmt.Sprintf("fenced by %s (lease %s, ttl %.0f ms, held as %q)", f.Witness, f.Lease, f.TTLMS, f.Holder)
	if f.Lapses > 0 {
		s += fmt.Sprintf(", lapsed %d time(s)", f.Lapses)
	}
	if f.Degraded {
		s += ", degraded run recorded"
	}
	return s
}
