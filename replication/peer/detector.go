// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"sync"
	"time"
)

// PeerFailure reports a peer declared failed.
type PeerFailure struct {
	Pair       string
	LastHeard  time.Time     // when the last frame from the peer was read
	DetectedAt time.Time     // when the detector gave up
	Timeout    time.Duration // silence tolerated: peer's interval × misses
	Reason     string
}

// LocalState is what the detector needs to know about this side of the
// connection, so as not to blame the peer for its own delays.
type LocalState interface {
	// LastReceived is when bytes from the peer last arrived (zero: never).
	LastReceived() time.Time
	// WaitingForPeer reports whether this side has consumed everything the
	// peer sent and is blocked waiting for more.
	WaitingForPeer() bool
	// PeerKernelLastHeard is when the peer's kernel last acknowledged what
	// this side sent; ok false if unknown.
	PeerKernelLastHeard() (t time.Time, ok bool)
}

// ProcessGrace is how many detector timeouts a peer process may stay
// silent while its host's kernel still acknowledges this side's data
// before it is declared failed.
const ProcessGrace = 10

// FailureDetector declares the peer failed after Misses consecutive
// heartbeat intervals without anything from it (any frame, or any bytes,
// proves the peer alive, not only heartbeats). It checks four times per
// interval, so a failure is detected between interval×misses and
// interval×(misses+¼) after the peer was last heard, within the
// interval×(misses+1) the design allows.
//
// Silence only counts while this side is waiting for the peer with nothing
// unread (LocalState.WaitingForPeer): time spent handling a frame (writing a
// chunk, fsync, commit) or waiting for a processor while the peer's bytes
// sit in the socket is this side's delay, not the peer's.
//
// The failure model is the host's: a host that crashed, or that the network
// cut off, neither sends nor acknowledges anything. A silent peer process
// whose kernel still acknowledges this side's heartbeats
// (LocalState.PeerKernelLastHeard) is alive but slow — on a loaded machine
// a process can wait longer than the timeout for a processor
// (docs/PEER-PROTOCOL.md) — and is given
// ProcessGrace times the timeout before it is declared failed: a false
// promotion would put two copies of the service on the network.
type FailureDetector struct {
	interval time.Duration
	misses   int
	local    LocalState // nil: frames observed are all it knows

	mu        sync.Mutex
	lastHeard time.Time
}

// NewFailureDetector returns a detector for a peer that sends heartbeats
// every interval; it starts as if the peer had just been heard.
func NewFailureDetector(interval time.Duration, misses int, local LocalState) *FailureDetector {
	return &FailureDetector{interval: interval, misses: misses, local: local, lastHeard: time.Now()}
}

// Timeout is the silence after which the peer is declared failed.
func (d *FailureDetector) Timeout() time.Duration { return d.interval * time.Duration(d.misses) }

// Observe records that a frame arrived at t.
func (d *FailureDetector) Observe(t time.Time) {
	d.mu.Lock()
	if t.After(d.lastHeard) {
		d.lastHeard = t
	}
	d.mu.Unlock()
}

func (d *FailureDetector) last() time.Time {
	if d.local != nil {
		d.Observe(d.local.LastReceived())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastHeard
}

// Run checks until ctx ends (ok false) or the peer is declared failed (ok
// true); reporting the failure is the caller's business.
func (d *FailureDetector) Run(ctx context.Context) (PeerFailure, bool) {
	t := time.NewTicker(max(d.interval/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return PeerFailure{}, false
		case now := <-t.C:
			if now.Sub(d.last()) <= d.Timeout() {
				continue
			}
			// Waiting is probed before the second look at the time: bytes
			// read just before the probe are then seen.
			if d.local != nil && !d.local.WaitingForPeer() {
				continue
			}
			last := d.last()
			silent := now.Sub(last)
			if silent <= d.Timeout() {
				continue
			}
			reason := "nothing from the peer for " + silent.Round(time.Millisecond).String()
			if d.local != nil {
				if k, ok := d.local.PeerKernelLastHeard(); ok && now.Sub(k) <= d.Timeout() {
					if silent <= ProcessGrace*d.Timeout() {
						continue // its host answers: a slow process, not (yet) a failure
					}
					reason = "the peer process has been silent for " + silent.Round(time.Millisecond).String() +
						" while its host still acknowledges this side's data"
				}
			}
			return PeerFailure{LastHeard: last, DetectedAt: now, Timeout: d.Timeout(), Reason: reason}, true
		}
	}
}
