// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/peertls/pki"
)

// cuttableProxy forwards TCP between the primary and the backup until cut:
// then it silently swallows everything in both directions, as a failed
// host would (no FIN, no RST). cutReturn swallows only what the backup
// sends: a primary that stops hearing a backup that still hears it;
// cutForward only what the primary sends.
type cuttableProxy struct {
	ln         net.Listener
	backend    string
	cut        atomic.Bool
	cutReturn  atomic.Bool
	cutForward atomic.Bool
	refuse     atomic.Bool // close new connections at once
	mu         sync.Mutex
	conns      []net.Conn
}

func newCuttableProxy(t *testing.T, backend string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln, backend: backend}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refuse.Load() {
				c.Close()
				continue
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go p.pipe(c, b, &p.cutReturn)
			go p.pipe(b, c, &p.cutForward)
		}
	}()
	return p
}

// reset ends every connection through the proxy with a TCP reset on both
// sides: what a middlebox does, or the kernel of a process that was killed.
func (p *cuttableProxy) reset(t *testing.T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if err := c.(*net.TCPConn).SetLinger(0); err != nil {
			t.Errorf("resetting a proxied connection: %v", err)
		}
		c.Close()
	}
	p.conns = nil
}

func (p *cuttableProxy) pipe(dst, src net.Conn, cutDir *atomic.Bool) {
	buf := make([]byte, 64<<10)
	cut := func() bool { return p.cut.Load() || (cutDir != nil && cutDir.Load()) }
	for {
		n, err := src.Read(buf)
		if n > 0 && !cut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !cut() {
				// Fails only on a dead connection, which the other side sees.
				_ = dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

// pairOverLoopback is a Primary (fake container and gate) replicating to a
// real Backup through a cuttableProxy, heartbeats every 10 ms.
type pairOverLoopback struct {
	p       *Primary
	b       *Backup
	proxy   *cuttableProxy
	rec     *recorder
	packets *fakePackets
}

func startPairOverLoopback(t *testing.T) pairOverLoopback {
	t.Helper()
	return startPairOverLoopbackMode(t, ModeEpoch)
}

func startPairOverLoopbackMode(t *testing.T, mode Mode) pairOverLoopback {
	t.Helper()
	return startPair(t, mode, nil, nil)
}

// startPair starts the pair with each side's fence (nil: unfenced).
func startPair(t *testing.T, mode Mode, primaryFence, backupFence Fence) pairOverLoopback {
	t.Helper()
	certs, err := pki.Generate(t.TempDir(), "primary", "backup")
	if err != nil {
		t.Fatal(err)
	}
	bcreds, err := certs.Hosts["backup"].Load()
	if err != nil {
		t.Fatal(err)
	}
	pcreds, err := certs.Hosts["primary"].Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	var network ServicePromoter = fakeNetwork{rec: rec}
	if mode == ModeHybrid {
		network = &fakeReplayNetwork{fakeNetwork: fakeNetwork{rec: rec}}
	}
	b, err := StartBackup(context.Background(), BackupOptions{
		Config: Config{Role: RoleBackup, Pair: "p1", Listen: ln.Addr().String(), PeerName: "primary", Mode: mode, Heartbeat: 10 * time.Millisecond},
		TLS:    bcreds, StoreDir: t.TempDir(), Listener: ln,
		Restorer: fakeRestorer{rec: rec}, Network: network, Fence: backupFence,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	proxy := newCuttableProxy(t, ln.Addr().String())

	pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
	p, err := NewPrimary(context.Background(), PrimaryOptions{
		Config: Config{Role: RolePrimary, Pair: "p1", Peer: proxy.ln.Addr().String(), PeerName: "backup", Mode: mode,
			Epoch: 20 * time.Millisecond, Heartbeat: 10 * time.Millisecond},
		TLS: pcreds, Packets: pk, WorkDir: t.TempDir(), Fence: primaryFence,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := p.Start(context.Background(), &fakeCheckpointer{rec: rec}); err != nil {
		t.Fatal(err)
	}
	return pairOverLoopback{p: p, b: b, proxy: proxy, rec: rec, packets: pk}
}

// TestPairOverLoopback runs a Primary (fake container and gate) against a
// real Backup over the real TLS peer channel: checkpoints are committed
// and acknowledged, output released; a clean Close says goodbye and does
// not promote;
// silence (the proxy swallows everything) promotes.
func TestPairOverLoopback(t *testing.T) {
	for _, tc := range []struct {
		name        string
		silence     bool
		wantPromote bool
	}{
		{name: "primary silent: backup promotes", silence: true, wantPromote: true},
		{name: "primary closes cleanly: no promotion", silence: false, wantPromote: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := startPairOverLoopback(t)
			p, b, proxy, rec := pr.p, pr.b, pr.proxy, pr.rec
			rec.waitFor(t, "release-output:3")
			if st := b.Status(); st.State != StateInSync || st.CommittedEpoch < 3 {
				t.Fatalf("backup status %+v", st)
			}
			if tc.silence {
				proxy.cut.Store(true)
			} else {
				p.Close(context.Background())
			}
			select {
			case <-b.Promoted():
			case <-time.After(time.Second):
			}
			st := b.Status()
			if promoted := st.State == StatePrimaryAfterFailover; promoted != tc.wantPromote {
				t.Fatalf("backup state %q (%s), want promoted %v; events %v", st.State, st.Reason, tc.wantPromote, rec.list())
			}
			if !tc.wantPromote && (st.State != StateDisconnected || !strings.Contains(st.Reason, "said goodbye (shutdown")) {
				t.Errorf("after a clean close the backup is %q: %q", st.State, st.Reason)
			}
			if tc.wantPromote {
				checkOrder(t, rec.list(), []string{"prepare-restore", "restore:" + itoa(st.Failover.Epoch), "network-up"}, nil)
				if st.Failover.DetectionMS < 30 || st.Restored == nil || st.Restored.Pid != 4242 {
					t.Errorf("failover %+v restored %+v", st.Failover, st.Restored)
				}
				// The primary, cut off too, went degraded: output released; it
				// keeps dialling the backup, which has promoted and listens no
				// more: it stays degraded and says why.
				rec.waitFor(t, "release-all")
				time.Sleep(time.Second)
				if ps := p.Status(); ps.State != StateDegraded || !strings.Contains(ps.Reason, "re-pairing") {
					t.Errorf("primary state %q (%s)", ps.State, ps.Reason)
				}
			}
		})
	}
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

// TestPairRepairsAfterFalseDetection: the primary stops hearing a backup
// that still hears it (the heartbeat gap of a busy backup, seen on loaded
// machines), goes degraded and closes the connection. The backup must not
// promote its now stale checkpoint, and says it is disconnected. The
// primary re-pairs, the backup is in sync again after one full checkpoint,
// and a real failure of the primary then promotes a checkpoint of the new
// connection.
func TestPairRepairsAfterFalseDetection(t *testing.T) {
	pr := startPairOverLoopback(t)
	p, b, proxy, rec := pr.p, pr.b, pr.proxy, pr.rec
	rec.waitFor(t, "release-output:3")
	proxy.cutReturn.Store(true)
	rec.waitFor(t, "release-all")
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: primary %+v\nbackup %+v", what, p.Status(), b.Status())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("backup disconnected", func() bool { return b.Status().State == StateDisconnected })
	stale := b.Status().CommittedEpoch
	if st := b.Status(); !strings.Contains(st.Reason, "not promoted") {
		t.Errorf("disconnected backup's reason %q", st.Reason)
	}
	proxy.cutReturn.Store(false)
	wait("re-paired, both in sync", func() bool {
		ps, bs := p.Status(), b.Status()
		return ps.State == StateInSync && ps.Repairs == 1 && bs.State == StateInSync && bs.CommittedEpoch > stale
	})
	select {
	case <-b.Promoted():
		t.Fatalf("backup promoted during the false detection: %+v", b.Status())
	default:
	}
	proxy.cut.Store(true)
	select {
	case <-b.Promoted():
	case <-time.After(3 * time.Second):
		t.Fatalf("backup did not promote: %+v", b.Status())
	}
	st := b.Status()
	if st.State != StatePrimaryAfterFailover || st.Failover.Epoch <= stale {
		t.Fatalf("promotion: state %q epoch %d (stale checkpoint was %d)", st.State, st.Failover.Epoch, stale)
	}
	ev := rec.list()
	resumed := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "resume:") })
	if resumed < 0 || resumed < slices.Index(ev, "release-all") {
		t.Errorf("output not held again after degraded: %v", ev)
	}
	checkOrder(t, ev, []string{"release-all", "restore:" + itoa(st.Failover.Epoch)}, nil)
}

// TestPairSupersededPrimaryStops: the backup stops hearing a primary that
// still hears it (one direction of the path lost), declares it failed and
// promotes. The primary is told so and stops for good — its output is
// never released — instead of going degraded and serving next to the
// promoted backup (split brain).
func TestPairSupersededPrimaryStops(t *testing.T) {
	pr := startPairOverLoopback(t)
	p, b, proxy, rec := pr.p, pr.b, pr.proxy, pr.rec
	rec.waitFor(t, "release-output:3")
	proxy.cutForward.Store(true)
	select {
	case <-b.Promoted():
	case <-time.After(3 * time.Second):
		t.Fatalf("backup did not promote: %+v", b.Status())
	}
	select {
	case <-p.Done():
	case <-time.After(3 * time.Second):
		t.Fatalf("primary still running: %+v", p.Status())
	}
	st := p.Status()
	if st.State != StateSuperseded || !strings.Contains(st.Reason, "the backup took over") {
		t.Fatalf("primary state %q (%s)", st.State, st.Reason)
	}
	time.Sleep(100 * time.Millisecond)
	if ev := rec.list(); slices.Contains(ev, "release-all") || slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, "resume:") }) {
		t.Errorf("superseded primary released its output or re-paired: %v", ev)
	}
}

// TestPairConnectionLostWithoutGoodbye: the primary's connection ends by a
// reset, no goodbye. If the primary cannot come back (its process is gone:
// the proxy refuses it), the backup promotes once the detection bound has
// passed since the last frame, and says why. If it dials again at once (a
// reset on the path of a live primary), the backup does not promote, the
// primary never goes degraded (nothing released unreplicated) and is in
// sync again after a full checkpoint. A primary whose packet gate fails
// (failed, output dropped) closes without a goodbye: the backup takes over.
func TestPairConnectionLostWithoutGoodbye(t *testing.T) {
	for _, tc := range []struct {
		name        string
		comesBack   bool
		gateFails   bool
		wantPromote bool
	}{
		{name: "primary gone: promotes after the bound", comesBack: false, wantPromote: true},
		{name: "primary dials again at once: no promotion", comesBack: true, wantPromote: false},
		{name: "primary's gate fails: promotes", comesBack: true, gateFails: true, wantPromote: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := startPairOverLoopback(t)
			p, b, proxy, rec := pr.p, pr.b, pr.proxy, pr.rec
			rec.waitFor(t, "release-output:3")
			proxy.refuse.Store(!tc.comesBack)
			lostAt := time.Now()
			if tc.gateFails {
				pr.packets.failed <- errors.New("queue reader stopped")
			} else {
				proxy.reset(t)
			}
			select {
			case <-b.Promoted():
			case <-time.After(time.Second):
			}
			st := b.Status()
			if promoted := st.State == StatePrimaryAfterFailover; promoted != tc.wantPromote {
				t.Fatalf("backup state %q (%s), want promoted %v; primary %q (%s)", st.State, st.Reason, tc.wantPromote, p.Status().State, p.Status().Reason)
			}
			if tc.wantPromote {
				if !strings.Contains(st.Reason, "without a goodbye") {
					t.Errorf("reason after the failover does not say what failed: %q", st.Reason)
				}
				// Bound: 10 ms × 3 from the last frame, which came at most a
				// heartbeat before the reset.
				if f := st.Failover; f == nil || f.DetectionMS < 30 || f.LastHeard.Add(30*time.Millisecond).Before(lostAt.Add(-15*time.Millisecond)) {
					t.Errorf("failover %+v: not after the detection bound", f)
				}
				if ps := p.Status(); tc.gateFails && ps.State != StateFailed {
					t.Errorf("primary with a failed gate: %q (%s)", ps.State, ps.Reason)
				}
				return
			}
			deadline := time.Now().Add(3 * time.Second)
			for ps, bs := p.Status(), b.Status(); ps.State != StateInSync || bs.State != StateInSync || ps.Redials != 1; ps, bs = p.Status(), b.Status() {
				if time.Now().After(deadline) {
					t.Fatalf("not in sync again: primary %q (%s, %d redials), backup %q (%s)", ps.State, ps.Reason, ps.Redials, bs.State, bs.Reason)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if ev := rec.list(); slices.Contains(ev, "release-all") {
				t.Errorf("primary released its output unreplicated across the reset: %v", ev)
			}
		})
	}
}
