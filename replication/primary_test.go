// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/wire"
)

// afterEach checks that the events of want appear in this order (others may
// be interleaved) and that none of never appears.
func checkOrder(t *testing.T, got, want, never []string) {
	t.Helper()
	i := 0
	for _, e := range got {
		if i < len(want) && e == want[i] {
			i++
		}
		if slices.Contains(never, e) {
			t.Errorf("event %q must not happen; events: %v", e, got)
		}
	}
	if i < len(want) {
		t.Errorf("missing %q in order; want subsequence %v; events: %v", want[i], want, got)
	}
}

func TestPrimaryEpochLoop(t *testing.T) {
	nack := &peer.NackError{Epoch: 1, Code: wire.CodeCorrupt, Message: "digest"}
	tests := []struct {
		name      string
		committed uint64 // backup's committed epoch at connect
		fail      map[int]bool
		sendErr   error
		// script runs after the first send (or failure) and returns what
		// must (in order) and must never have happened.
		script func(t *testing.T, p *Primary, s *fakeSender) (want, never []string, state State)
	}{{
		name: "ack releases output after the whole sequence",
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "send:1")
			s.ack(1, nil)
			return []string{"gate", "hold", "freeze", "seal:1", "dump", "thaw", "release-input", "send:1", "ack:1", "release-output:1"},
				[]string{"release-all"}, StateInSync
		},
	}, {
		name: "no output released before the ack",
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "send:1")
			time.Sleep(20 * time.Millisecond)
			return []string{"send:1"}, []string{"release-output:1", "release-all"}, StateSyncing
		},
	}, {
		name: "nack keeps output held; a later ack releases it",
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "send:1")
			s.ack(1, nack)
			p.loopTickForTest()
			s.rec.waitFor(t, "send:2")
			s.ack(2, nil)
			return []string{"send:1", "ack:1", "send:2", "ack:2", "release-output:2"},
				[]string{"release-output:1", "release-all"}, StateInSync
		},
	}, {
		name:    "send failure never releases output, then degrades, the backup told first",
		sendErr: errors.New("connection reset"),
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "release-all")
			return []string{"send-failed:1", "goodbye:degraded", "close-peer", "release-all"}, []string{"release-output:1"}, StateDegraded
		},
	}, {
		name: "peer failure degrades: everything released, unreplicated",
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "send:1")
			s.opts.OnPeerFailed(peer.PeerFailure{Reason: "silent", LastHeard: time.Now().Add(-90 * time.Millisecond), DetectedAt: time.Now()})
			s.rec.waitFor(t, "release-all")
			s.ack(1, nil) // a late answer changes nothing
			return []string{"send:1", "goodbye:degraded", "close-peer", "release-all"}, []string{"release-output:1"}, StateDegraded
		},
	}, {
		name: "failed checkpoint sends nothing; its output goes with the next",
		fail: map[int]bool{1: true},
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "release-input")
			p.loopTickForTest()
			s.rec.waitFor(t, "send:2")
			s.ack(2, nil)
			return []string{"hold", "freeze", "seal:1", "thaw", "release-input", "hold", "seal:2", "send:2", "release-output:2"},
				[]string{"send:1", "release-all"}, StateInSync
		},
	}, {
		name:      "epochs continue above what the backup holds",
		committed: 10,
		script: func(t *testing.T, p *Primary, s *fakeSender) ([]string, []string, State) {
			s.rec.waitFor(t, "send:11")
			s.ack(11, nil)
			return []string{"seal:1", "send:11", "ack:11", "release-output:1"}, nil, StateInSync
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			ck := &fakeCheckpointer{rec: rec, fail: tc.fail}
			snd := &fakeSender{committed: tc.committed, sendErr: tc.sendErr}
			p, _ := newTestPrimary(t, time.Minute, ck, snd)
			want, never, state := tc.script(t, p, snd)
			checkOrder(t, rec.list(), want, never)
			if st := p.Status(); st.State != state {
				t.Errorf("state %q (reason %q), want %q", st.State, st.Reason, state)
			}
		})
	}
}

// Ticks during a send defer the next checkpoint to the send's end (the
// first) or are skipped (the others): one checkpoint follows the send.
func TestPrimaryDefersEpochWhileSending(t *testing.T) {
	rec := newRecorder()
	snd := &fakeSender{block: make(chan struct{})}
	p, _ := newTestPrimary(t, 5*time.Millisecond, &fakeCheckpointer{rec: rec}, snd)
	time.Sleep(60 * time.Millisecond) // many ticks while the first send is stuck
	st := p.Status()
	if st.Epochs != 1 || st.DeferredEpochs != 1 || st.SkippedEpochs == 0 {
		t.Fatalf("while a send is in flight: %d checkpoints, %d deferred, %d skipped; want 1, 1 and some skipped",
			st.Epochs, st.DeferredEpochs, st.SkippedEpochs)
	}
	close(snd.block)
	rec.waitFor(t, "send:2")
}

func TestPrimaryStatusAndClose(t *testing.T) {
	rec := newRecorder()
	snd := &fakeSender{}
	p, _ := newTestPrimary(t, time.Minute, &fakeCheckpointer{rec: rec}, snd)
	rec.waitFor(t, "send:1")
	snd.ack(1, nil)
	st := p.Status()
	if st.CommittedEpoch != 1 || st.Epoch != 1 || st.PauseMS.N != 1 || st.PauseMS.Mean != 3 || st.BytesPerEpoch.Last != 5 || st.AckMS.N != 1 {
		t.Errorf("status %+v", st)
	}
	if r := st.RecentEpochs; len(r) != 1 || r[0].Epoch != 1 || r[0].PauseMS != 3 || r[0].AckMS != st.AckMS.Last {
		t.Errorf("recent epochs %+v (ack ms %v)", r, st.AckMS.Last)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, rec.list(), []string{"close-peer", "close-criu", "ungate"}, nil)
	if st := p.Status(); st.State != StateClosed {
		t.Errorf("state after Close %q", st.State)
	}
}

func TestPrimaryGateFailureFails(t *testing.T) {
	rec := newRecorder()
	snd := &fakeSender{}
	p, pk := newTestPrimary(t, time.Minute, &fakeCheckpointer{rec: rec}, snd)
	rec.waitFor(t, "send:1")
	pk.failed <- errors.New("queue socket closed")
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not end")
	}
	if st := p.Status(); st.State != StateFailed {
		t.Errorf("state %q", st.State)
	}
	checkOrder(t, rec.list(), nil, []string{"release-all"}) // fail closed
}

func TestWindowSummary(t *testing.T) {
	var w window
	for i := 1; i <= 100; i++ {
		w.add(float64(i))
	}
	s := w.summary()
	// The last 64 samples: 37..100.
	if s.N != 64 || s.Last != 100 || s.Max != 100 || s.Mean != 68.5 || s.P90 != 94 {
		t.Errorf("summary %+v", s)
	}
}

func TestRecordEpochKeepsTheNewest(t *testing.T) {
	var p Primary
	for e := uint64(1); e <= recentEpochs+10; e++ {
		p.recordEpoch(EpochFigures{Epoch: e})
	}
	if len(p.recent) != recentEpochs || p.recent[0].Epoch != 11 || p.recent[recentEpochs-1].Epoch != recentEpochs+10 {
		t.Errorf("kept %d, from %d to %d", len(p.recent), p.recent[0].Epoch, p.recent[len(p.recent)-1].Epoch)
	}
}

func TestTimingsHistogram(t *testing.T) {
	tests := []struct {
		samples    []float64
		cumulative map[float64]uint64 // bound → samples at or below it
		count      uint64
		sum        float64
	}{
		{nil, nil, 0, 0},
		{[]float64{0.05, 0.1, 0.3}, map[float64]uint64{0.1: 2, 0.25: 2, 0.5: 3, 5000: 3}, 3, 0.45},
		// Above the last bound: counted (+Inf), in no bucket.
		{[]float64{7, 9000}, map[float64]uint64{5: 0, 10: 1, 5000: 1}, 2, 9007},
	}
	for _, tc := range tests {
		var tm timings
		for _, v := range tc.samples {
			tm.add(v)
		}
		s := tm.summary()
		if tc.count == 0 {
			if s.Histogram != nil {
				t.Errorf("%v: histogram %+v without samples", tc.samples, s.Histogram)
			}
			continue
		}
		h := s.Histogram
		if h == nil || h.Count != tc.count || h.SumMS != tc.sum || len(h.Cumulative) != len(HistogramBoundsMS) {
			t.Fatalf("%v: histogram %+v", tc.samples, h)
		}
		for i, b := range HistogramBoundsMS {
			if want, ok := tc.cumulative[b]; ok && h.Cumulative[i] != want {
				t.Errorf("%v: ≤ %v ms: %d, want %d", tc.samples, b, h.Cumulative[i], want)
			}
		}
	}
}

func TestStatusJSON(t *testing.T) {
	s := Status{Pair: "p", Role: RoleBackup, State: StatePrimaryAfterFailover, CommittedEpoch: 7,
		Failover: &FailoverTimings{DetectionMS: 90, RestoreMS: 80}, Restored: &RestoredContainer{ID: "r", Pid: 12, Epoch: 7}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"state":"primary-after-failover"`, `"committed_epoch":7`, `"detection_ms":90`, `"pid":12`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.Failover.RestoreMS != 80 {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

// TestPrimaryAckStall: the backup's heartbeats would keep coming, but it
// stops acknowledging (its reader or disk stuck). Once the oldest
// outstanding checkpoint has waited longer than the bound with no answer
// since, the primary treats the backup as failed: it says goodbye, then
// goes degraded and releases its output, with a reason naming the stall.
// An answered checkpoint resets the wait.
func TestPrimaryAckStall(t *testing.T) {
	rec := newRecorder()
	snd := &fakeSender{rec: rec}
	const bound = 300 * time.Millisecond
	p := startTestPrimaryConfig(t, Config{Epoch: time.Minute, AckTimeout: bound},
		&fakePackets{rec: rec, failed: make(chan error, 1)}, &fakeCheckpointer{rec: rec}, snd)
	rec.waitFor(t, "send:1")
	time.Sleep(bound / 2)
	snd.ack(1, nil) // answered in time
	p.loopTickForTest()
	rec.waitFor(t, "send:2")
	sentAt := time.Now()
	rec.waitFor(t, "release-all") // 2 is never answered
	waited := time.Since(sentAt)
	st := p.Status()
	if st.State != StateDegraded || !strings.Contains(st.Reason, "acknowledgement stalled: checkpoint 2") {
		t.Fatalf("state %q reason %q", st.State, st.Reason)
	}
	if waited < bound || waited > bound+time.Second {
		t.Errorf("degraded %s after the unanswered checkpoint, bound %s", waited, bound)
	}
	checkOrder(t, rec.list(), []string{"release-output:1", "send:2", "goodbye:degraded", "release-all"}, []string{"release-output:2"})
}

// TestPrimaryConnectionOutlivesStartContext: the context given to Start
// bounds the dial only. The shim cancels it before it stops the engine on
// a Delete; had the connection ended with it, it would have closed without
// a goodbye and the backup would have taken over a deleted container.
func TestPrimaryConnectionOutlivesStartContext(t *testing.T) {
	rec := newRecorder()
	snd := &fakeSender{rec: rec}
	snd.done = make(chan struct{})
	var dialCtx context.Context
	p, err := NewPrimary(context.Background(), PrimaryOptions{
		Config:  Config{Role: RolePrimary, Pair: "pair1", Peer: "192.0.2.2:7000", Epoch: time.Minute},
		Packets: &fakePackets{rec: rec, failed: make(chan error, 1)}, WorkDir: t.TempDir(),
		Dial: func(ctx context.Context, o peer.Options) (CheckpointSender, error) {
			snd.opts, dialCtx = o, ctx
			return snd, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx, &fakeCheckpointer{rec: rec}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "send:1")
	cancel()
	time.Sleep(20 * time.Millisecond)
	if dialCtx.Err() != nil {
		t.Fatal("the connection's context ended with Start's")
	}
	if err := p.Stop(context.Background(), StopDeleted, "container deleted"); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, rec.list(), []string{"send:1", "goodbye:deleted", "close-peer"}, nil)
	if st := p.Status(); st.State != StateClosed || !strings.Contains(st.Reason, "deleted") {
		t.Errorf("state %q reason %q", st.State, st.Reason)
	}
}

// TestPrimaryFailing: a run of failed or refused checkpoints is counted in
// the status; past the bound (count or time) the primary goes failing,
// output stays held, and the next acknowledged checkpoint makes it in-sync.
func TestPrimaryFailing(t *testing.T) {
	nack := &peer.NackError{Epoch: 2, Code: wire.CodeCorrupt, Message: "digest mismatch"}
	tests := []struct {
		name     string
		failures int           // FailingAfterFailures
		after    time.Duration // FailingAfter
		nacks    bool          // the backup refuses the checkpoints instead of the checkpointer failing them
		runs     int           // failures in a row after the first ack
		gap      time.Duration // between them
		want     State
	}{
		{name: "below the bound: in sync, counted", failures: 3, after: time.Hour, runs: 2, want: StateInSync},
		{name: "count bound reached", failures: 3, after: time.Hour, runs: 3, want: StateFailing},
		{name: "past the count bound", failures: 3, after: time.Hour, runs: 5, want: StateFailing},
		{name: "time bound reached", failures: 1000, after: 20 * time.Millisecond, runs: 2, gap: 40 * time.Millisecond, want: StateFailing},
		{name: "time bound not reached", failures: 1000, after: time.Hour, runs: 4, want: StateInSync},
		{name: "refused by the backup", failures: 2, after: time.Hour, nacks: true, runs: 2, want: StateFailing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			fail := map[int]bool{}
			if !tc.nacks {
				for i := 2; i < 2+tc.runs; i++ {
					fail[i] = true
				}
			}
			ck := &fakeCheckpointer{rec: rec, fail: fail}
			snd := &fakeSender{rec: rec}
			pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
			p := startTestPrimaryConfig(t, Config{Epoch: time.Minute, FailingAfterFailures: tc.failures, FailingAfter: tc.after}, pk, ck, snd)
			rec.waitFor(t, "send:1")
			snd.ack(1, nil)
			for i := 2; i < 2+tc.runs; i++ {
				time.Sleep(tc.gap)
				p.loopTickForTest()
				if tc.nacks {
					rec.waitFor(t, fmt.Sprintf("send:%d", i))
					snd.ack(uint64(i), nack)
				}
				want := uint64(i - 1)
				waitPrimary(t, p, func(s Status) bool { return s.ConsecutiveFailures == want })
			}
			st := p.Status()
			if st.State != tc.want {
				t.Errorf("after %d failures: state %q (reason %q), want %q", tc.runs, st.State, st.Reason, tc.want)
			}
			if st.ConsecutiveFailures != uint64(tc.runs) || st.LastFailure == "" {
				t.Errorf("status: %d consecutive failures, last %q; want %d and the error", st.ConsecutiveFailures, st.LastFailure, tc.runs)
			}
			lastErr := "injected failure"
			if tc.nacks {
				lastErr = "digest mismatch"
			}
			if !strings.Contains(st.LastFailure, lastErr) || (tc.want == StateFailing && !strings.Contains(st.Reason, lastErr)) {
				t.Errorf("status does not carry the last error %q: last %q, reason %q", lastErr, st.LastFailure, st.Reason)
			}
			// Fail closed: nothing after epoch 1 was released meanwhile.
			never := []string{"release-all"}
			for i := 2; i < 2+tc.runs; i++ {
				never = append(never, fmt.Sprintf("release-output:%d", i))
			}
			checkOrder(t, rec.list(), nil, never)

			// One acknowledged checkpoint ends the run.
			next := 2 + tc.runs
			p.loopTickForTest()
			rec.waitFor(t, fmt.Sprintf("send:%d", next))
			snd.ack(uint64(next), nil)
			st = p.Status()
			if st.State != StateInSync || st.ConsecutiveFailures != 0 || st.LastFailure != "" || st.Reason != "" {
				t.Errorf("after an acknowledged checkpoint: state %q reason %q, %d consecutive failures (last %q); want in-sync, none",
					st.State, st.Reason, st.ConsecutiveFailures, st.LastFailure)
			}
			checkOrder(t, rec.list(), []string{fmt.Sprintf("release-output:%d", next)}, []string{"release-all"})
		})
	}
}

// TestPrimaryCheckpointOverdue: a checkpoint that has not returned after
// the failing bound (CRIU hung) makes the primary failing, with the reason
// in its status and its output still held; once it returns and is
// acknowledged the primary is in sync again.
func TestPrimaryCheckpointOverdue(t *testing.T) {
	rec := newRecorder()
	unhang := make(chan struct{})
	ck := &fakeCheckpointer{rec: rec, hang: map[int]chan struct{}{2: unhang}}
	snd := &fakeSender{rec: rec}
	pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
	p := startTestPrimaryConfig(t, Config{Epoch: time.Minute, FailingAfter: 30 * time.Millisecond}, pk, ck, snd)
	rec.waitFor(t, "send:1")
	snd.ack(1, nil)
	waitPrimary(t, p, func(s Status) bool { return s.State == StateInSync })
	p.loopTickForTest()
	rec.waitFor(t, "hang:2")
	waitPrimary(t, p, func(s Status) bool { return s.State == StateFailing })
	if st := p.Status(); !strings.Contains(st.Reason, "has not returned") || !strings.Contains(st.LastFailure, "io.rrc.failing-after") {
		t.Errorf("overdue checkpoint: reason %q, last failure %q", st.Reason, st.LastFailure)
	}
	close(unhang)
	rec.waitFor(t, "send:2")
	snd.ack(2, nil)
	waitPrimary(t, p, func(s Status) bool { return s.State == StateInSync })
	if st := p.Status(); st.LastFailure != "" || st.ConsecutiveFailures != 0 {
		t.Errorf("after the acknowledgement: last failure %q, %d failures", st.LastFailure, st.ConsecutiveFailures)
	}
	checkOrder(t, rec.list(), []string{"hang:2", "send:2", "release-output:2"}, []string{"release-all"})
}

// TestPrimarySkipIdle: with SkipIdle, ticks take no checkpoint while no
// packet enters or leaves the container after a committed one (counted as
// idle); the first packet makes the next tick take one. Without it every
// tick takes one.
func TestPrimarySkipIdle(t *testing.T) {
	for _, skip := range []bool{true, false} {
		t.Run(fmt.Sprintf("skip-idle=%v", skip), func(t *testing.T) {
			rec := newRecorder()
			snd := &fakeSender{rec: rec}
			pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
			p := startTestPrimaryConfig(t, Config{Epoch: 10 * time.Millisecond, SkipIdle: skip}, pk, &fakeCheckpointer{rec: rec}, snd)
			rec.waitFor(t, "send:1")
			snd.ack(1, nil)
			if !skip {
				rec.waitFor(t, "send:2")
				if st := p.Status(); st.IdleTicks != 0 {
					t.Errorf("%d idle ticks without SkipIdle", st.IdleTicks)
				}
				return
			}
			waitPrimary(t, p, func(s Status) bool { return s.IdleTicks >= 5 })
			if st := p.Status(); st.Epochs != 1 || st.State != StateInSync {
				t.Fatalf("idle: %d checkpoints, state %q; want the first only, in sync", st.Epochs, st.State)
			}
			pk.traffic.Add(1) // the container sent a packet
			rec.waitFor(t, "send:2")
			snd.ack(2, nil)
			idle := p.Status().IdleTicks
			waitPrimary(t, p, func(s Status) bool { return s.IdleTicks >= idle+5 })
			if st := p.Status(); st.Epochs != 2 {
				t.Errorf("%d checkpoints, want 2: one more for the packet, none while idle again", st.Epochs)
			}
		})
	}
}

// waitPrimary waits until p's status satisfies cond.
func waitPrimary(t *testing.T, p *Primary, cond func(Status) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(p.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out; status %+v", p.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
}
