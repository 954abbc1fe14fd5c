// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type fakeLocal struct {
	last    atomic.Int64
	waiting atomic.Bool
	kernel  atomic.Int64 // when the peer's kernel last acknowledged; 0: unknown
}

func (f *fakeLocal) LastReceived() time.Time {
	if n := f.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}
func (f *fakeLocal) WaitingForPeer() bool { return f.waiting.Load() }
func (f *fakeLocal) PeerKernelLastHeard() (time.Time, bool) {
	n := f.kernel.Load()
	return time.Unix(0, n), n != 0
}

// keepKernelAlive makes the peer's kernel acknowledge every interval/2
// until ctx ends, as a live host would.
func (f *fakeLocal) keepKernelAlive(ctx context.Context, interval time.Duration) {
	f.kernel.Store(time.Now().UnixNano())
	go func() {
		for ctx.Err() == nil {
			f.kernel.Store(time.Now().UnixNano())
			time.Sleep(interval / 2)
		}
	}()
}

func TestFailureDetector(t *testing.T) {
	const interval, misses = 10 * time.Millisecond, 3
	t.Run("silent peer", func(t *testing.T) {
		local := &fakeLocal{}
		local.waiting.Store(true)
		d := NewFailureDetector(interval, misses, local)
		start := time.Now()
		f, ok := d.Run(context.Background())
		took := time.Since(start)
		if !ok || took < interval*misses || f.DetectedAt.Sub(f.LastHeard) > interval*(misses+1) {
			t.Fatalf("ok %v after %s: %+v", ok, took, f)
		}
	})
	t.Run("bytes keep it alive", func(t *testing.T) {
		local := &fakeLocal{}
		local.waiting.Store(true)
		d := NewFailureDetector(interval, misses, local)
		ctx, cancel := context.WithTimeout(context.Background(), 20*interval)
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				local.last.Store(time.Now().UnixNano())
				time.Sleep(interval)
			}
		}()
		if f, ok := d.Run(ctx); ok {
			t.Fatalf("false failure: %+v", f)
		}
	})
	t.Run("silent process on a live host: failed only after the grace", func(t *testing.T) {
		local := &fakeLocal{}
		local.waiting.Store(true)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		local.keepKernelAlive(ctx, interval)
		d := NewFailureDetector(interval, misses, local)
		start := time.Now()
		f, ok := d.Run(context.Background())
		took := time.Since(start)
		if !ok || took < ProcessGrace*d.Timeout() || !strings.Contains(f.Reason, "host still acknowledges") {
			t.Fatalf("ok %v after %s (grace %s): %+v", ok, took, ProcessGrace*d.Timeout(), f)
		}
	})
	t.Run("host goes silent too: the normal timeout", func(t *testing.T) {
		local := &fakeLocal{}
		local.waiting.Store(true)
		local.kernel.Store(time.Now().UnixNano()) // heard once, then nothing
		d := NewFailureDetector(interval, misses, local)
		start := time.Now()
		f, ok := d.Run(context.Background())
		if took := time.Since(start); !ok || took > (misses+2)*interval || strings.Contains(f.Reason, "host") {
			t.Fatalf("ok %v after %s: %+v", ok, took, f)
		}
	})
	t.Run("local delay is not the peer's", func(t *testing.T) {
		local := &fakeLocal{} // not waiting: bytes unread, or a frame being handled
		d := NewFailureDetector(interval, misses, local)
		ctx, cancel := context.WithTimeout(context.Background(), 10*interval)
		defer cancel()
		if f, ok := d.Run(ctx); ok {
			t.Fatalf("false failure: %+v", f)
		}
		local.waiting.Store(true)
		if _, ok := d.Run(context.Background()); !ok {
			t.Fatal("no failure once waiting")
		}
	})
}

// TestKernelSilence: the peer's kernel is silent only while something this
// side sent waits for its acknowledgement, or a probe of its closed window
// went unanswered.
func TestKernelSilence(t *testing.T) {
	for _, tc := range []struct {
		name      string
		unacked   uint32
		probes    uint8
		lastAckMS uint32
		want      time.Duration
	}{
		{"everything acknowledged long ago, nothing sent since (this side starved)", 0, 0, 500, 0},
		{"everything acknowledged, the peer's window full (its process starved)", 0, 0, 300, 0},
		{"a heartbeat waits for its acknowledgement", 1, 0, 120, 120 * time.Millisecond},
		{"a window probe went unanswered", 0, 1, 400, 400 * time.Millisecond},
		{"acknowledged just now", 2, 0, 3, 3 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelSilence(tc.unacked, tc.probes, tc.lastAckMS); got != tc.want {
				t.Errorf("kernelSilence(%d, %d, %d) = %v, want %v", tc.unacked, tc.probes, tc.lastAckMS, got, tc.want)
			}
		})
	}
}
