// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/peer"
)

// startHybridPrimary makes a started hybrid-mode Primary on fakes.
func startHybridPrimary(t *testing.T) (*Primary, *fakePackets, *fakeSender, *recorder) {
	t.Helper()
	rec := newRecorder()
	pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
	snd := &fakeSender{rec: rec}
	p := startTestPrimaryMode(t, ModeHybrid, time.Minute, pk, &fakeCheckpointer{rec: rec}, snd)
	if pk.hooks.Tag == nil || pk.hooks.Record == nil {
		t.Fatal("hybrid mode opened the gate without the log's hooks")
	}
	return p, pk, snd, rec
}

// TestHybridRelease: in hybrid mode an output is released as soon as the
// backup holds the log up to it — not at the next checkpoint — but only
// once a checkpoint of this connection is committed; inputs are logged
// before outputs they cause; a lost backup releases everything.
func TestHybridRelease(t *testing.T) {
	p, pk, snd, rec := startHybridPrimary(t)
	rec.waitFor(t, "send:1") // the first checkpoint, sealed at the log's epoch 1
	if err := pk.hooks.Record([]byte("request")); err != nil {
		t.Fatal(err)
	}
	seq, err := pk.hooks.Tag([]byte("reply"))
	if err != nil || seq != 2 {
		t.Fatalf("output tagged %d, %v; want 2 (after the input)", seq, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(rec.list(), func(e string) bool { return e == "log:1.2+1" || e == "log:1.1+2" }) {
		if time.Now().After(deadline) {
			t.Fatalf("the output's record was not sent: %v", rec.list())
		}
		time.Sleep(time.Millisecond)
	}
	snd.opts.OnLogAck(1, 2)
	time.Sleep(20 * time.Millisecond)
	if slices.ContainsFunc(rec.list(), func(e string) bool { return len(e) > 15 && e[:15] == "release-output:" }) {
		t.Fatalf("released before any checkpoint was committed: %v", rec.list())
	}
	snd.ack(1, nil)
	rec.waitFor(t, "release-output:2")
	// The next reply goes on the log's acknowledgement alone.
	if seq, _ = pk.hooks.Tag([]byte("reply 2")); seq != 3 {
		t.Fatalf("tag %d", seq)
	}
	rec.waitFor(t, "log:1.3+1")
	snd.opts.OnLogAck(1, 3)
	rec.waitFor(t, "release-output:3")
	st := p.Status()
	if st.Mode != ModeHybrid || st.Log == nil || st.Log.Records != 3 || st.Log.Acked != "1.3" || st.State != StateInSync {
		t.Fatalf("status %+v log %+v", st, st.Log)
	}
	snd.opts.OnPeerFailed(peer.PeerFailure{Reason: "silent"})
	rec.waitFor(t, "release-all")
}

// TestHybridAckBeyondTheLog: an acknowledgement of a log position
// the current log never reached releases nothing.
func TestHybridAckBeyondTheLog(t *testing.T) {
	_, pk, snd, rec := startHybridPrimary(t)
	rec.waitFor(t, "send:1")
	snd.ack(1, nil)
	if _, err := pk.hooks.Tag([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	before := len(rec.list())
	snd.opts.OnLogAck(0, 9) // the epoch before this connection's log
	time.Sleep(20 * time.Millisecond)
	for _, e := range rec.list()[before:] {
		if len(e) > 15 && e[:15] == "release-output:" {
			t.Fatalf("released on an acknowledgement outside the log: %v", rec.list())
		}
	}
}

// fakeReplayNetwork is a standby network whose container answers the
// input "request" with "reply" (as the primary's fake container did).
type fakeReplayNetwork struct {
	fakeNetwork
	mu    sync.Mutex
	judge func([]byte) bool
}

func (n *fakeReplayNetwork) JudgeOutputs(j func([]byte) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.judge = j
}

func (n *fakeReplayNetwork) Inject(p []byte) error {
	n.rec.add("inject:%s", p)
	n.mu.Lock()
	defer n.mu.Unlock()
	if string(p) == "request" {
		n.rec.add("judged:%v", n.judge([]byte("reply")))
	}
	return nil
}

func (n *fakeReplayNetwork) DropKept(func([]byte) bool) error { n.rec.add("drop-kept"); return nil }
func (n *fakeReplayNetwork) SendOut([]byte) error             { n.rec.add("send-out"); return nil }
func (n *fakeReplayNetwork) Translate(_, _ func([]byte) bool) { n.rec.add("translate") }

// TestHybridPairOverLoopback: a hybrid-mode Primary (fake container and
// gate) against a real Backup over the real peer channel: the log reaches
// the backup, which acknowledges it, and an output is released on that
// acknowledgement; a silent primary, or one whose connection ends without
// a goodbye and does not come back (its process killed), is promoted: the
// checkpoint restored, the log after it replayed, the network promoted, in
// this order.
func TestHybridPairOverLoopback(t *testing.T) {
	for _, killed := range []bool{false, true} {
		t.Run(map[bool]string{false: "silent", true: "connection lost without goodbye"}[killed], func(t *testing.T) {
			testHybridPairOverLoopback(t, killed)
		})
	}
}

func testHybridPairOverLoopback(t *testing.T, killed bool) {
	pr := startPairOverLoopbackMode(t, ModeHybrid)
	deadline := time.Now().Add(5 * time.Second)
	for pr.p.Status().State != StateInSync { // a checkpoint committed on this connection
		if time.Now().After(deadline) {
			t.Fatalf("primary never in sync: %+v", pr.p.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := pr.packets.hooks.Record([]byte("request")); err != nil {
		t.Fatal(err)
	}
	seq, err := pr.packets.hooks.Tag([]byte("reply"))
	if err != nil {
		t.Fatal(err)
	}
	pr.rec.waitFor(t, "release-output:"+strconv.FormatUint(seq, 10))
	st := pr.b.Status()
	if st.Mode != ModeHybrid || st.Log == nil || st.Log.Records < 2 {
		t.Fatalf("backup status %+v log %+v", st, st.Log)
	}
	if killed {
		pr.proxy.refuse.Store(true)
		pr.proxy.reset(t)
	} else {
		pr.proxy.cut.Store(true)
	}
	select {
	case <-pr.b.Promoted():
	case <-time.After(5 * time.Second):
		t.Fatal("no decision about the silent primary")
	}
	st = pr.b.Status()
	if killed != strings.Contains(st.Reason, "without a goodbye") {
		t.Errorf("reason after the failover: %q", st.Reason)
	}
	if st.State != StatePrimaryAfterFailover || st.Failover == nil || st.Failover.Replay == nil {
		t.Fatalf("backup after the primary's silence: %s (%s), failover %+v", st.State, st.Reason, st.Failover)
	}
	rp := st.Failover.Replay
	if rp.Diverged != 0 || rp.Pending != 0 || rp.Reset != 0 || rp.Waits != 0 {
		t.Fatalf("replay %+v: the fake container answers as the primary did", rp)
	}
	events := pr.rec.list()
	restored := slices.IndexFunc(events, func(e string) bool { return strings.HasPrefix(e, "restore:") })
	up := slices.Index(events, "network-up")
	if restored < 0 || up < restored {
		t.Fatalf("events %v: want the restore, then the network", events)
	}
	injected := 0
	for _, e := range events[restored:up] {
		if strings.HasPrefix(e, "inject:") {
			injected++
		}
		if e == "judged:true" {
			t.Errorf("a reply the clients have was kept: %v", events)
		}
	}
	if injected != rp.Inputs {
		t.Errorf("%d inputs injected between the restore and the network, the report says %d: %v", injected, rp.Inputs, events)
	}
}

// TestHybridLogAckStall: the backup committed a checkpoint but stops
// acknowledging the log (its heartbeats would still come): once a record
// has waited longer than the bound, the primary goes degraded, naming the
// stall, and only then releases.
func TestHybridLogAckStall(t *testing.T) {
	rec := newRecorder()
	pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
	snd := &fakeSender{rec: rec}
	const bound = 300 * time.Millisecond
	p := startTestPrimaryConfig(t, Config{Mode: ModeHybrid, Epoch: time.Minute, AckTimeout: bound}, pk, &fakeCheckpointer{rec: rec}, snd)
	rec.waitFor(t, "send:1")
	snd.ack(1, nil)
	taggedAt := time.Now()
	if _, err := pk.hooks.Tag([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "release-all") // its record is never acknowledged
	if waited := time.Since(taggedAt); waited < bound {
		t.Errorf("degraded %s after the record, bound %s", waited, bound)
	}
	if st := p.Status(); st.State != StateDegraded || !strings.Contains(st.Reason, "input log records unacknowledged") {
		t.Fatalf("state %q reason %q", st.State, st.Reason)
	}
	checkOrder(t, rec.list(), []string{"goodbye:degraded", "release-all"}, []string{"release-output:1"})
}

// TestHybridFailingKeepsTheLog: in hybrid mode a primary whose checkpoints
// keep failing goes failing but goes on sending the log, and releases an
// output once the backup holds the log up to it.
func TestHybridFailingKeepsTheLog(t *testing.T) {
	rec := newRecorder()
	pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
	snd := &fakeSender{rec: rec}
	ck := &fakeCheckpointer{rec: rec, fail: map[int]bool{2: true}}
	p := startTestPrimaryConfig(t, Config{Mode: ModeHybrid, Epoch: time.Minute, FailingAfterFailures: 1}, pk, ck, snd)
	rec.waitFor(t, "send:1")
	snd.ack(1, nil)
	p.loopTickForTest()
	waitPrimary(t, p, func(s Status) bool { return s.State == StateFailing })
	seq, err := pk.hooks.Tag([]byte("reply"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var sent string
	for sent == "" {
		for _, e := range rec.list() {
			if strings.HasPrefix(e, "log:") && strings.HasSuffix(e, "."+strconv.FormatUint(seq, 10)+"+1") {
				sent = e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("failing: the output's record was not sent: %v", rec.list())
		}
		time.Sleep(time.Millisecond)
	}
	epoch, _ := strconv.ParseUint(strings.TrimPrefix(strings.Split(sent, ".")[0], "log:"), 10, 64)
	snd.opts.OnLogAck(epoch, seq)
	rec.waitFor(t, "release-output:"+strconv.FormatUint(seq, 10))
	if st := p.Status(); st.State != StateFailing || st.ConsecutiveFailures != 1 {
		t.Errorf("state %q with %d consecutive failures; want failing, 1", st.State, st.ConsecutiveFailures)
	}
}
