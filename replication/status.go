// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"slices"
	"time"
)

// State is where one side of a pair stands.
type State string

const (
	// StateStarting: primary gated (output held), not yet replicating;
	// backup waiting for its primary.
	StateStarting State = "starting"
	// StateSyncing: the first checkpoint has not been acknowledged yet.
	StateSyncing State = "syncing"
	// StateInSync: checkpoints are being acknowledged.
	StateInSync State = "in-sync"
	// StateDegraded: primary running unreplicated (peer lost); output
	// flows; it keeps trying to re-pair.
	StateDegraded State = "degraded"
	// StateFailing: primary whose checkpoints keep failing (or being
	// refused by the backup) past the configured bound: its output stays
	// held (fail closed) until a checkpoint is acknowledged, which makes it
	// in-sync again.
	StateFailing State = "failing"
	// StateSuperseded: primary told by its backup that it was declared
	// failed and replaced: its output stays held for good (fencing).
	StateSuperseded State = "superseded"
	// StateDisconnected: backup whose primary went away without failing
	// (said goodbye, or failed before the backup was in sync):
	// not protected, nothing to promote; it waits for the primary.
	StateDisconnected State = "disconnected"
	// StatePrimaryLost: backup in sync whose primary's connection ended
	// without a goodbye (EOF, reset, TLS error: a killed or crashed shim
	// on a live host, or the network): it waits out the failure detector's
	// bound from the last frame, then promotes unless the primary has
	// reconnected.
	StatePrimaryLost State = "primary-lost"
	// StateFencing: fenced backup that declared its primary failed and
	// waits to own the pair in the witness (the primary's lease must
	// expire there) before it promotes; a primary that reconnects
	// meanwhile ends the wait (docs/FENCING.md).
	StateFencing State = "fencing"
	// StatePromoting: the backup declared the primary failed and restores.
	StatePromoting State = "promoting"
	// StatePrimaryAfterFailover: the backup's restored container is the service.
	StatePrimaryAfterFailover State = "primary-after-failover"
	// StateFailed: the engine cannot go on (e.g. promotion failed).
	StateFailed State = "failed"
	// StateClosed: Close was called.
	StateClosed State = "closed"
)

// Status is a snapshot of one side of a pair; rrcctl shows it as JSON.
// Durations are in milliseconds (float) so that the JSON is readable.
type Status struct {
	Pair  string `json:"pair"`
	Role  Role   `json:"role"`
	Peer  string `json:"peer,omitempty"` // primary: its backup's address
	Mode  Mode   `json:"mode,omitempty"`
	State State  `json:"state"`
	// StateSince is when the side entered State.
	StateSince time.Time `json:"state_since,omitzero"`
	Reason     string    `json:"reason,omitempty"` // why degraded or failed

	// Primary: the newest epoch checkpointed; backup: the newest committed.
	Epoch          uint64    `json:"epoch"`
	CommittedEpoch uint64    `json:"committed_epoch"` // acknowledged by / committed on the backup
	LastCommitAt   time.Time `json:"last_commit_at,omitzero"`
	// LagMS is the age of the state the backup holds: now minus when the
	// last committed checkpoint was taken (primary) or committed (backup).
	LagMS float64 `json:"lag_ms"`

	Epochs         uint64 `json:"epochs,omitempty"`          // checkpoints taken
	SkippedEpochs  uint64 `json:"skipped_epochs,omitempty"`  // ticks skipped: a deferred checkpoint was already due
	IdleTicks      uint64 `json:"idle_ticks,omitempty"`      // ticks without a checkpoint: nothing in or out since the last committed one (io.rrc.skip-idle)
	DeferredEpochs uint64 `json:"deferred_epochs,omitempty"` // checkpoints taken late: the previous one was still being sent at the tick
	FailedEpochs   uint64 `json:"failed_epochs,omitempty"`   // checkpoints that failed (output stays held)
	Nacks          uint64 `json:"nacks,omitempty"`           // checkpoints the backup refused
	// ConsecutiveFailures: checkpoints failed or refused since the last
	// acknowledged one (primary); LastFailure: the newest one's error.
	ConsecutiveFailures uint64 `json:"consecutive_failures,omitempty"`
	LastFailure         string `json:"last_failure,omitempty"`
	Repairs             uint64 `json:"repairs,omitempty"` // primary: times re-paired after degraded
	Redials             uint64 `json:"redials,omitempty"` // primary: lost connections replaced at once, output held (not degraded)

	PauseMS       Summary `json:"pause_ms,omitzero"`             // freeze → thaw, recent epochs
	InputHoldMS   Summary `json:"input_hold_ms,omitzero"`        // inbound packets held per epoch
	BytesPerEpoch Summary `json:"bytes_per_epoch,omitzero"`      // checkpoint size, recent epochs
	SentPerEpoch  Summary `json:"sent_bytes_per_epoch,omitzero"` // primary: of that, sent (the rest: copied from the previous checkpoint)
	AckMS         Summary `json:"ack_ms,omitzero"`               // checkpoint taken → acknowledged
	// MemoryCopiedPerEpoch: memory CRIU copied inside the pause; with
	// incremental dumps only what the container wrote since the previous
	// checkpoint (the rest of the image comes from it, after the thaw).
	MemoryCopiedPerEpoch Summary `json:"memory_copied_bytes_per_epoch,omitzero"`

	// RecentEpochs (primary): the newest acknowledged checkpoints, oldest
	// first, each with its pause and its acknowledgement.
	RecentEpochs []EpochFigures `json:"recent_epochs,omitempty"`

	// StateSeconds is the time spent in each state since the side started,
	// the current one included (time degraded, say).
	StateSeconds map[State]float64 `json:"state_seconds,omitempty"`

	// Fence is the pair's ownership in a witness; nil: unfenced.
	Fence    *FenceStatus       `json:"fence,omitempty"`
	Gate     *GateStatus        `json:"gate,omitempty"`
	Log      *LogStatus         `json:"log,omitempty"` // hybrid mode: the input log
	Failover *FailoverTimings   `json:"failover,omitempty"`
	Restored *RestoredContainer `json:"restored,omitempty"`
}

// EpochFigures are one acknowledged checkpoint's times.
type EpochFigures struct {
	Epoch   uint64  `json:"epoch"`
	PauseMS float64 `json:"pause_ms"` // freeze → thaw
	AckMS   float64 `json:"ack_ms"`   // taken → acknowledged
}

// GateStatus is the output gate's part of the primary's status.
type GateStatus struct {
	OpenEpoch     uint64  `json:"open_epoch"`
	ReleasedEpoch uint64  `json:"released_epoch"`
	PassThrough   bool    `json:"pass_through"`
	Held          int     `json:"held"`
	HeldBytes     int64   `json:"held_bytes"`
	OldestHeldMS  float64 `json:"oldest_held_ms"`
	Released      uint64  `json:"released"`
	Dropped       uint64  `json:"dropped"`
}

// FailoverTimings is the story of a promotion in numbers (milliseconds).
type FailoverTimings struct {
	LastHeard  time.Time `json:"last_heard"`
	DetectedAt time.Time `json:"detected_at"`
	// DetectionMS: last heard from the primary → declared failed.
	DetectionMS float64 `json:"detection_ms"`
	// FenceMS: declared failed → owner of the pair in the witness (the
	// primary's lease had to expire there first); 0 when unfenced.
	FenceMS float64 `json:"fence_ms,omitempty"`
	// StopMS: closing the peer channel and the listener (nothing more
	// may commit).
	StopMS float64 `json:"stop_ms"`
	// VerifyMS: the checkpoint's files checked against its digest, while
	// the log is read, the namespace prepared and the checkpoint restored.
	VerifyMS float64 `json:"verify_ms"`
	// LogMS: hybrid mode's log after the checkpoint, read for the replay.
	LogMS float64 `json:"log_ms,omitempty"`
	// PrepareMS: temporary restore route in the standby namespace.
	PrepareMS float64 `json:"prepare_ms"`
	// RestoreMS: bundle preparation + runc restore (CRIU, TCP repair).
	RestoreMS float64 `json:"restore_ms"`
	// NetworkMS: service link up + first gratuitous ARP + route cleanup.
	NetworkMS float64 `json:"network_ms"`
	// ReplayMS: hybrid mode's replay of the log after the checkpoint.
	ReplayMS float64 `json:"replay_ms,omitempty"`
	// TotalMS: last heard → restored and reachable.
	TotalMS float64        `json:"total_ms"`
	Epoch   uint64         `json:"epoch"`            // checkpoint restored
	Replay  *ReplayFigures `json:"replay,omitempty"` // hybrid mode
}

// ReplayFigures say what a hybrid failover's replay did.
type ReplayFigures struct {
	Records    int `json:"records"`    // log records after the checkpoint
	Inputs     int `json:"inputs"`     // fed to the container
	Outputs    int `json:"outputs"`    // packets it sent during the replay, judged
	Waits      int `json:"waits"`      // inputs fed after the bound, their preceding outputs missing
	Diverged   int `json:"diverged"`   // connections whose replay contradicted what was released
	Pending    int `json:"pending"`    // connections whose released output did not come out again
	Accepted   int `json:"accepted"`   // connections accepted after the checkpoint
	Translated int `json:"translated"` // of those, carrying on with their numbers translated by the gate
	Reset      int `json:"reset"`      // connections reset: the diverged and the pending
}

// Summary summarises recent samples.
type Summary struct {
	N    int     `json:"n"`
	Last float64 `json:"last"`
	Mean float64 `json:"mean"`
	P90  float64 `json:"p90"`
	Max  float64 `json:"max"`
	// Histogram counts every sample since the side started (durations
	// only): what metrics turn into a Prometheus histogram.
	Histogram *Histogram `json:"histogram,omitempty"`
}

// HistogramBoundsMS are the upper bounds of a Histogram's buckets, in
// milliseconds: from a hybrid round trip's tenths of a millisecond to a
// failing checkpoint's seconds.
var HistogramBoundsMS = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}

// Histogram is a count of samples per bucket since the side started.
type Histogram struct {
	// Cumulative[i] counts the samples ≤ HistogramBoundsMS[i] (as
	// Prometheus counts); Count all of them, SumMS their sum.
	Cumulative []uint64 `json:"cumulative"`
	Count      uint64   `json:"count"`
	SumMS      float64  `json:"sum_ms"`
}

// timings are durations in milliseconds: the recent window and the
// histogram since the start.
type timings struct {
	window
	buckets []uint64 // per bucket, not cumulative; one more for +Inf
	count   uint64
	sum     float64
}

func (t *timings) add(v float64) {
	t.window.add(v)
	if t.buckets == nil {
		t.buckets = make([]uint64, len(HistogramBoundsMS)+1)
	}
	i, _ := slices.BinarySearch(HistogramBoundsMS, v)
	t.buckets[i]++
	t.count++
	t.sum += v
}

func (t *timings) summary() Summary {
	s := t.window.summary()
	if t.count == 0 {
		return s
	}
	h := Histogram{Cumulative: make([]uint64, len(HistogramBoundsMS)), Count: t.count, SumMS: t.sum}
	var run uint64
	for i := range HistogramBoundsMS {
		run += t.buckets[i]
		h.Cumulative[i] = run
	}
	s.Histogram = &h
	return s
}

// window keeps the most recent samples for a Summary.
type window struct {
	vals []float64
	next int
}

const windowSize = 64

func (w *window) add(v float64) {
	if len(w.vals) < windowSize {
		w.vals = append(w.vals, v)
		w.next = len(w.vals) % windowSize
		return
	}
	w.vals[w.next] = v
	w.next = (w.next + 1) % windowSize
}

func (w *window) summary() Summary {
	n := len(w.vals)
	if n == 0 {
		return Summary{}
	}
	s := Summary{N: n, Last: w.vals[(w.next+n-1)%n]}
	sorted := slices.Clone(w.vals)
	slices.Sort(sorted)
	var sum float64
	for _, v := range sorted {
		sum += v
	}
	s.Mean = sum / float64(n)
	s.P90 = sorted[min(n-1, (n*9+9)/10-1)]
	s.Max = sorted[n-1]
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
