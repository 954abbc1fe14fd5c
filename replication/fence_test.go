// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// manualFence is held until a time the test sets.
type manualFence struct {
	fakeFence
	mu    sync.Mutex
	until time.Time
}

func (f *manualFence) HeldUntil() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.until
}

func (f *manualFence) set(until time.Time) {
	f.mu.Lock()
	f.until = until
	f.mu.Unlock()
}

// TestFencedGate: a release happens only while the fence is held; one asked
// for while it is not happens when it is held again; pass-through (degraded)
// ends when the fence lapses and comes back with it.
func TestFencedGate(t *testing.T) {
	type step struct {
		do   string // held, lapse, release:N, release-all, resume
		want []string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"releases while held", []step{
			{"held", nil}, {"release:1", []string{"release-output:1"}}, {"release:2", []string{"release-output:2"}},
		}},
		{"lapsed: held back, released when renewed", []step{
			{"held", nil}, {"release:1", []string{"release-output:1"}}, {"lapse", nil},
			{"release:2", nil}, {"release:3", nil}, {"held", []string{"release-output:3"}},
		}},
		{"degraded ends when lapsed and comes back", []step{
			{"held", nil}, {"release-all", []string{"release-all"}}, {"lapse", []string{"resume:1"}},
			{"release-all", nil}, {"held", []string{"release-all"}},
		}},
		{"re-paired while lapsed: no pass-through when renewed", []step{
			{"held", nil}, {"release-all", []string{"release-all"}}, {"lapse", []string{"resume:1"}},
			{"resume", []string{"resume:1"}}, {"release:4", nil}, {"held", []string{"release-output:4"}},
		}},
		{"never held: nothing released", []step{
			{"lapse", nil}, {"release:1", nil}, {"release-all", nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			f := &manualFence{}
			g := newFencedGate(&fakeGate{rec: rec}, f, slog.New(slog.DiscardHandler), time.Now)
			for _, st := range tc.steps {
				before := len(rec.list())
				switch {
				case st.do == "held":
					f.set(time.Now().Add(time.Hour))
					g.check()
				case st.do == "lapse":
					f.set(time.Now().Add(-time.Millisecond))
					g.check()
				case st.do == "release-all":
					if err := g.ReleaseAll(); err != nil {
						t.Fatal(err)
					}
				case st.do == "resume":
					g.Resume()
				default:
					var e uint64
					if _, err := fmt.Sscanf(st.do, "release:%d", &e); err != nil {
						t.Fatal(err)
					}
					if err := g.Release(e); err != nil {
						t.Fatal(err)
					}
				}
				if got := rec.list()[before:]; !slices.Equal(got, st.want) && (len(got) != 0 || len(st.want) != 0) {
					t.Fatalf("after %s: gate calls %v, want %v (all: %v)", st.do, got, st.want, rec.list())
				}
			}
		})
	}
}

// fencedPair is a pair over loopback with a fake witness (TTL 300 ms).
type fencedPair struct {
	pairOverLoopback
	w      *fakeWitness
	pf, bf *fakeFence
}

const fakeTTL = 300 * time.Millisecond

func startFencedPair(t *testing.T) fencedPair {
	t.Helper()
	return startFencedPairMode(t, ModeEpoch)
}

func startFencedPairMode(t *testing.T, mode Mode) fencedPair {
	t.Helper()
	w := newFakeWitness(fakeTTL)
	pf, bf := w.fence("a primary"), w.fence("b backup")
	pr := startPair(t, mode, pf, bf)
	if mode == ModeEpoch {
		pr.rec.waitFor(t, "release-output:3")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pr.p.Status().State != StateInSync {
		if time.Now().After(deadline) {
			t.Fatalf("primary never in sync: %+v", pr.p.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if o, _ := w.state(); o != "a primary" {
		t.Fatalf("owner %q after the start", o)
	}
	return fencedPair{pairOverLoopback: pr, w: w, pf: pf, bf: bf}
}

func (fp fencedPair) wait(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: primary %+v\nbackup %+v\nevents %v", what, fp.p.Status(), fp.b.Status(), fp.rec.list())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isolatePrimary cuts the primary's host from everything and waits for the
// backup's promotion; it returns when the cut began.
func (fp fencedPair) isolatePrimary(t *testing.T) time.Time {
	t.Helper()
	cut := time.Now()
	fp.pf.cut.Store(true)
	fp.proxy.cut.Store(true)
	fp.promoted(t)
	return cut
}

func (fp fencedPair) promoted(t *testing.T) {
	t.Helper()
	select {
	case <-fp.b.Promoted():
	case <-time.After(3 * time.Second):
		t.Fatalf("backup did not promote: %+v", fp.b.Status())
	}
}

func (fp fencedPair) notPromoted(t *testing.T, what string) {
	t.Helper()
	select {
	case <-fp.b.Promoted():
		t.Fatalf("%s: the backup promoted: %+v", what, fp.b.Status())
	default:
	}
}

// TestFencedPeerLinkCut: the link between the hosts is cut, both reach the
// witness. The primary keeps its lease, records its degraded run and
// serves; the backup declares it failed but cannot own the pair and does
// not promote. Healed, the pair re-pairs and the mark is cleared.
func TestFencedPeerLinkCut(t *testing.T) {
	fp := startFencedPair(t)
	fp.proxy.cut.Store(true)
	fp.rec.waitFor(t, "release-all")
	if _, d := fp.w.state(); d != "a primary" {
		t.Errorf("degraded mark %q: released before the witness knew", d)
	}
	fp.wait(t, "backup fencing", 2*time.Second, func() bool { return fp.b.Status().State == StateFencing })
	time.Sleep(4 * fakeTTL)
	fp.notPromoted(t, "primary alive and holding its lease")
	if o, _ := fp.w.state(); o != "a primary" || fp.b.Status().State != StateFencing {
		t.Fatalf("owner %q, backup %q", o, fp.b.Status().State)
	}
	fp.proxy.cut.Store(false)
	fp.wait(t, "re-paired", 5*time.Second, func() bool {
		_, d := fp.w.state()
		return fp.p.Status().State == StateInSync && fp.b.Status().State == StateInSync && d == ""
	})
	fp.notPromoted(t, "after the heal")
}

// TestFencedPrimaryIsolated: the primary's host is cut from everything.
// It cannot record a degraded run, so it releases nothing (fail closed);
// the backup promotes once the primary's lease expired, and says how long
// that took. Back, the old primary learns it was superseded.
func TestFencedPrimaryIsolated(t *testing.T) {
	fp := startFencedPair(t)
	cut := fp.isolatePrimary(t)
	st := fp.b.Status()
	// Owner no sooner than the lease could expire: its last renewal came
	// at most a third of the TTL before the cut.
	owned := st.Failover.DetectedAt.Add(time.Duration(st.Failover.FenceMS * float64(time.Millisecond)))
	if st.State != StatePrimaryAfterFailover || st.Failover.FenceMS <= 0 || owned.Before(cut.Add(fakeTTL*2/3)) {
		t.Fatalf("backup %q, failover %+v", st.State, st.Failover)
	}
	if o, _ := fp.w.state(); o != "b backup" {
		t.Errorf("owner %q after the promotion", o)
	}
	fp.wait(t, "isolated primary degraded, output held", 2*time.Second, func() bool {
		ps := fp.p.Status()
		return ps.State == StateDegraded && strings.Contains(ps.Reason, "witness did not record")
	})
	if slices.Contains(fp.rec.list(), "release-all") {
		t.Errorf("isolated primary released its output unreplicated: %v", fp.rec.list())
	}
	fp.pf.cut.Store(false)
	fp.wait(t, "old primary superseded", 3*time.Second, func() bool { return fp.p.Status().State == StateSuperseded })
	if slices.Contains(fp.rec.list(), "release-all") {
		t.Errorf("superseded primary released its output: %v", fp.rec.list())
	}
}

// TestFencedDegradedRecordedLater: the primary loses its backup while the
// witness cannot record the degraded run: its output stays held, and is
// released once a later attempt records it (re-pairing tries again).
func TestFencedDegradedRecordedLater(t *testing.T) {
	fp := startFencedPair(t)
	fp.pf.failMark.Store(true)
	fp.proxy.cut.Store(true)
	fp.wait(t, "degraded, output held", 3*time.Second, func() bool {
		return strings.Contains(fp.p.Status().Reason, "witness did not record")
	})
	if slices.Contains(fp.rec.list(), "release-all") {
		t.Fatalf("released before the witness recorded the degraded run: %v", fp.rec.list())
	}
	fp.pf.failMark.Store(false)
	fp.rec.waitFor(t, "release-all")
	if _, d := fp.w.state(); d != "a primary" {
		t.Errorf("released without the mark: %q", d)
	}
	if ps := fp.p.Status(); ps.State != StateDegraded || strings.Contains(ps.Reason, "witness did not record") {
		t.Errorf("primary %q: %s", ps.State, ps.Reason)
	}
	fp.notPromoted(t, "primary holding its lease")
}

// TestFencedBackupWithoutWitness: a backup that cannot reach the witness
// never promotes, however silent the primary; it does once it can.
func TestFencedBackupWithoutWitness(t *testing.T) {
	fp := startFencedPair(t)
	fp.bf.cut.Store(true)
	fp.pf.cut.Store(true)
	fp.proxy.cut.Store(true)
	fp.wait(t, "backup fencing", 2*time.Second, func() bool { return fp.b.Status().State == StateFencing })
	time.Sleep(4 * fakeTTL)
	fp.notPromoted(t, "witness unreachable")
	fp.bf.cut.Store(false)
	fp.promoted(t) // once it reached the witness
	if st := fp.b.Status(); st.State != StatePrimaryAfterFailover {
		t.Fatalf("backup %q: %s", st.State, st.Reason)
	}
}

// TestFencedStaleAfterDegraded: the primary ran degraded (recorded), then
// died. The backup owns the pair once its lease expired but finds the
// mark: its checkpoint lacks what was released, so it does not promote
// and gives the ownership back.
func TestFencedStaleAfterDegraded(t *testing.T) {
	fp := startFencedPair(t)
	fp.proxy.cut.Store(true)
	fp.rec.waitFor(t, "release-all")
	fp.pf.cut.Store(true) // its host dies: no more renewals
	fp.wait(t, "backup refused", 3*time.Second, func() bool { return fp.b.Status().State == StateDisconnected })
	fp.notPromoted(t, "stale checkpoint")
	if st := fp.b.Status(); !strings.Contains(st.Reason, "degraded") {
		t.Errorf("reason %q", st.Reason)
	}
	fp.wait(t, "ownership given back", 2*time.Second, func() bool { o, _ := fp.w.state(); return o != "b backup" })
}

// TestFencedPrimaryLapse: a primary that cannot renew its lease holds
// what acknowledgements would release (fail closed) and releases it once
// it owns the pair again; the backup, still hearing it, never promotes.
func TestFencedPrimaryLapse(t *testing.T) {
	fp := startFencedPair(t)
	fp.pf.cut.Store(true)
	fp.wait(t, "fence lapsed", 2*time.Second, func() bool { return fp.p.Status().Fence.Lapses == 1 })
	time.Sleep(50 * time.Millisecond)
	n := len(fp.rec.list())
	time.Sleep(200 * time.Millisecond)
	if slices.ContainsFunc(fp.rec.list()[n:], func(e string) bool { return strings.HasPrefix(e, "release-") && e != "release-input" }) {
		t.Fatalf("output released while the fence had lapsed: %v", fp.rec.list()[n:])
	}
	fp.pf.cut.Store(false)
	fp.wait(t, "released again", 2*time.Second, func() bool {
		return slices.ContainsFunc(fp.rec.list()[n:], func(e string) bool { return strings.HasPrefix(e, "release-output:") })
	})
	fp.notPromoted(t, "lapse")
	if ps := fp.p.Status(); ps.State != StateInSync || !ps.Fence.Held {
		t.Errorf("primary %q fence %+v", ps.State, ps.Fence)
	}
}

// TestFencedHybrid: in hybrid mode too, a reply the backup holds the log
// of is not released while the primary's fence has lapsed, and is once it
// is renewed; a primary cut from everything is replaced (the log replayed)
// only after its lease expired.
func TestFencedHybrid(t *testing.T) {
	fp := startFencedPairMode(t, ModeHybrid)
	fp.pf.cut.Store(true)
	fp.wait(t, "fence lapsed", 2*time.Second, func() bool { return fp.p.Status().Fence.Lapses == 1 })
	if err := fp.packets.hooks.Record([]byte("request")); err != nil {
		t.Fatal(err)
	}
	seq, err := fp.packets.hooks.Tag([]byte("reply"))
	if err != nil {
		t.Fatal(err)
	}
	released := "release-output:" + strconv.FormatUint(seq, 10)
	time.Sleep(200 * time.Millisecond) // the backup holds the log by now
	if slices.Contains(fp.rec.list(), released) {
		t.Fatalf("reply released while the fence had lapsed: %v", fp.rec.list())
	}
	fp.pf.cut.Store(false)
	fp.rec.waitFor(t, released)

	cut := fp.isolatePrimary(t)
	st := fp.b.Status()
	if st.State != StatePrimaryAfterFailover || st.Failover.Replay == nil {
		t.Fatalf("backup %s (%s), failover %+v", st.State, st.Reason, st.Failover)
	}
	owned := st.Failover.DetectedAt.Add(time.Duration(st.Failover.FenceMS * float64(time.Millisecond)))
	if owned.Before(cut.Add(fakeTTL * 2 / 3)) {
		t.Fatalf("owner %s after the cut: before the lease could expire", owned.Sub(cut))
	}
}
