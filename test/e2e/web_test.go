// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// The web workloads of issue 17: Debian's lighttpd replicated through the
// shim at 100 ms epochs, its replies of many packets, clients that check
// every byte, and the longest wait a client sees around a failover.

// waitBudgetMargin is added to the bound (detection + restore +
// 0.5 s) on the longest wait. The wait runs from a connection's last
// response before the crash; output is released once per commit cycle, so
// that response can precede the crash by up to a cycle (≈ one epoch plus
// the checkpoint's send and ack, ≈ 150 ms here), which the bound does not
// count; the other failover steps (stop, route, link up, GARP) take a few
// milliseconds.
//
// And a request the restored checkpoint does not hold (it reached a after
// the last committed checkpoint's freeze) is the client's to send again, at
// its own retransmission timer: about a commit cycle plus 200 ms, doubled
// for each attempt lost while no host answered. Nothing on the server can
// make a client resend sooner; clientResend is the allowance for it.
const waitBudgetMargin = 200*time.Millisecond + clientResend

// clientResend: see waitBudgetMargin.
const clientResend = 500 * time.Millisecond

// servedAfterUp is how soon after the service address comes up on b every
// waiting client must have had its next response (issue 17).
const servedAfterUp = 500 * time.Millisecond

func startWebPair(ctx context.Context, t *testing.T, rl replicationLab, id string) string {
	t.Helper()
	l := rl.l
	svc := l.Subnet + ".200"
	rl.startPair(ctx, t, pairSpec{id: id, image: lab.LighttpdImage, serviceIP: svc, listen: l.IP("b") + ":7100",
		extra: []string{"--annotation", "io.rrc.epoch=100ms"}})
	if err := lab.WaitFor(20*time.Second, func() error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), svc+":80", time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		return lab.NewHTTPConn(c).Get("f01", 5*time.Second)
	}); err != nil {
		t.Fatalf("lighttpd on %s: %v", svc, err)
	}
	return svc + ":80"
}

// TestWebFailover: eight keep-alive clients fetch 1-27 KB files from a
// replicated lighttpd; host a crashes under them. Every response is
// checked byte by byte, no connection may close, and every client must be
// served again within servedAfterUp of the address coming up on b.
func TestWebFailover(t *testing.T) {
	rl := startReplicationLab(t, "brweb", "10.93.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const id = "w1"
	addr := startWebPair(ctx, t, rl, id)

	w, err := lab.NewWebWorkload(l.Netns("client"), addr, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const before = 3 * time.Second
	anyStatus := func(status.Published) bool { return true }
	c0 := waitStatus(t, l, "a", id, "primary status", time.Second, anyStatus).Engine.CommittedEpoch
	rctx, rcancel := context.WithTimeout(ctx, before)
	if err := w.Run(rctx, 10*time.Second); err != nil {
		rcancel()
		t.Fatalf("before the crash: %v", err)
	}
	rcancel()
	st := waitStatus(t, l, "a", id, "primary status", time.Second, anyStatus)
	commits := float64(st.Engine.CommittedEpoch-c0) / before.Seconds()
	n0 := w.Responses()
	mean, p99 := w.Latency()
	rate := float64(n0) / before.Seconds()
	t.Logf("before the crash: %d responses in %s (%.1f/s), latency mean %s p99 %s; %.1f epochs committed per second (pause mean %.1f ms, ack mean %.1f ms, %d deferred)",
		n0, before, rate, mean.Round(time.Millisecond), p99.Round(time.Millisecond), commits, st.Engine.PauseMS.Mean, st.Engine.AckMS.Mean, st.Engine.DeferredEpochs)
	// A response written within an epoch leaves at that epoch's release:
	// each connection gets about one response per committed epoch, the
	// rate the machine's load allows. Gated at the container's OUTPUT (TCP
	// Small Queues), a 27 KB response took about ten epochs.
	if want := webRateShare * 8 * commits; rate < want {
		t.Errorf("%.1f responses/s with %.1f epochs committed per second: want at least %.0f%% of one response per connection per epoch (%.1f/s)",
			rate, commits, 100*webRateShare, want)
	}

	var crashAt time.Time
	rctx, rcancel = context.WithCancel(ctx)
	defer rcancel()
	runErr := make(chan error, 1)
	crashAt = crashDuring(t, l, "a", time.Second, func() {
		go func() { runErr <- w.Run(rctx, 20*time.Second) }()
	})
	after := waitPromoted(t, l, id)
	f := after.Engine.Failover
	up := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	time.Sleep(time.Until(up.Add(3 * time.Second)))
	rcancel()
	if err := <-runErr; err != nil {
		t.Fatalf("across the failover (every connection must survive, every byte right): %v", err)
	}
	// The crash is dated by b's last hearing of a: lab.sh starts a moment
	// after crashDuring's clock, and cuts the links first thing.
	cut := f.LastHeard
	worst, all := w.LongestWait(cut)
	t.Logf("failover: restored epoch %d; detection %.1f ms, restore %.1f ms, total (last heard → reachable) %.1f ms; lab.sh crash began %s before b last heard a",
		f.Epoch, f.DetectionMS, f.RestoreMS, f.TotalMS, cut.Sub(crashAt).Round(time.Millisecond))
	for _, g := range all {
		served := "never"
		if !g.After.IsZero() {
			served = g.After.Sub(up).Round(time.Millisecond).String() + " after the address came up"
		}
		t.Logf("connection %d: waited %s (last response %s before b last heard a), served %s",
			g.Conn, g.Wait.Round(time.Millisecond), cut.Sub(g.Before).Round(time.Millisecond), served)
	}
	budget := time.Duration((f.DetectionMS+f.RestoreMS)*float64(time.Millisecond)) + servedAfterUp
	t.Logf("longest wait %s (connection %d), bound detection + restore + 0.5 s = %s (+ %s margin)",
		worst.Wait.Round(time.Millisecond), worst.Conn, budget.Round(time.Millisecond), waitBudgetMargin)
	for _, g := range all {
		if g.After.IsZero() {
			t.Errorf("connection %d: no response after the failover", g.Conn)
		} else if d := g.After.Sub(up); d > servedAfterUp+clientResend {
			t.Errorf("connection %d: served %s after the address came up, want ≤ %s (+ %s for a request the checkpoint lacks)", g.Conn, d.Round(time.Millisecond), servedAfterUp, clientResend)
		}
	}
	if worst.Wait > budget+waitBudgetMargin {
		t.Errorf("longest wait %s > detection + restore + 0.5 s (%s) + %s", worst.Wait.Round(time.Millisecond), budget.Round(time.Millisecond), waitBudgetMargin)
	}
	if w.Responses() <= n0 {
		t.Errorf("no responses after the failover")
	}
}

// webRateShare: the share of one response per connection per committed
// epoch the clients must get. Not all of it: a response whose request
// arrives during the freeze or just before the seal waits one epoch more,
// and the first responses of a connection leave with a congestion window
// of ten segments (two epochs for a 27 KB file).
const webRateShare = 0.5

// TestDownloadFailover: a client downloads the 10 MB file from a
// replicated lighttpd, once with no failure (issue 17: ≤ 2 s at 100 ms
// epochs) and once while host a crashes: every byte right, the connection
// kept.
func TestDownloadFailover(t *testing.T) {
	rl := startReplicationLab(t, "brdl", "10.94.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const id = "d1"
	addr := startWebPair(ctx, t, rl, id)

	anyStatus := func(status.Published) bool { return true }
	c0 := waitStatus(t, l, "a", id, "primary status", time.Second, anyStatus).Engine.CommittedEpoch
	took, _, err := lab.Download(l.Netns("client"), addr, lab.WWWBig, 60*time.Second)
	if err != nil {
		diagnoseWeb(t, l, "a", id)
		t.Fatalf("download with no failure: %v", err)
	}
	c1 := waitStatus(t, l, "a", id, "primary status", time.Second, anyStatus).Engine.CommittedEpoch
	cycle := took / time.Duration(max(1, c1-c0))
	t.Logf("10 MB download, epoch mode at 100 ms, no failure: %s, %d epochs committed meanwhile (a commit cycle of %s)", took.Round(time.Millisecond), c1-c0, cycle.Round(time.Millisecond))
	// Slow start from ten segments doubles the window each round trip, and
	// a round trip is a commit cycle: 10 MB takes about ten, plus the
	// connection's set-up and the request. Issue 17's 2 s is that at
	// 100 ms epochs on a quiet machine (make bench measures it); here the
	// bound is counted in the cycles this machine's load allowed.
	if limit := downloadCycles * cycle; took > limit {
		t.Errorf("10 MB download took %s, more than %d commit cycles (%s)", took.Round(time.Millisecond), downloadCycles, limit.Round(time.Millisecond))
	}

	var marks []time.Time
	// Early in the transfer: the first MiB takes several commit cycles.
	crashAt := crashDuring(t, l, "a", 600*time.Millisecond, func() {
		took, marks, err = lab.Download(l.Netns("client"), addr, lab.WWWBig, 60*time.Second)
	})
	if err != nil {
		t.Fatalf("download across the failover (connection kept, every byte right): %v", err)
	}
	after := waitPromoted(t, l, id)
	f := after.Engine.Failover
	up := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	cut := f.LastHeard // see TestWebFailover
	var lastBefore, firstAfter time.Time
	for _, m := range marks {
		if !m.After(cut) {
			lastBefore = m
		} else if firstAfter.IsZero() {
			firstAfter = m
		}
	}
	t.Logf("10 MB download across the failover: %s; detection %.1f ms, restore %.1f ms, total %.1f ms (lab.sh crash began %s before b last heard a); MiB marks: last %s before b last heard a, first %s after the address came up",
		took.Round(time.Millisecond), f.DetectionMS, f.RestoreMS, f.TotalMS, cut.Sub(crashAt).Round(time.Millisecond),
		sinceOrNone(cut, lastBefore), firstAfter.Sub(up).Round(time.Millisecond))
	if firstAfter.IsZero() {
		t.Fatalf("the download was over before a crashed: nothing measured across the failover")
	} else if firstAfter.Sub(up) > servedAfterUp+100*time.Millisecond {
		// The next MiB after the address is up: 0.5 s, plus the time a
		// MiB takes at the restored connection's restarted window.
		t.Errorf("first MiB after the failover came %s after the address came up", firstAfter.Sub(up).Round(time.Millisecond))
	}
}

// downloadCycles bounds the 10 MB download in commit cycles. Slow start
// needs about ten round trips and the connection and the request two more
// (15 cycles measured on a busy machine), but a checkpoint late by more than
// the sender's retransmission timeout makes it start again from one segment
// (27 cycles seen while other lab tests ran). Gated at the container's
// OUTPUT, two packets left per epoch: thousands of cycles.
const downloadCycles = 40

// diagnoseWeb logs what the gate and the container's sockets look like on
// host h: the engine's status, the gate namespace's queues and counters,
// the container's TCP sockets.
func diagnoseWeb(t *testing.T, l *lab.Lab, h, id string) {
	t.Helper()
	b, _ := os.ReadFile(status.File(l.State(h)+"/rrc", l.Namespace(h), id))
	t.Logf("status on %s: %s", h, b)
	netns := filepath.Join(l.State(h), "rrc", "netns", l.Namespace(h), id, id)
	gate := filepath.Join(filepath.Dir(netns), ".gate", id)
	for _, c := range []string{
		"nsenter --net=" + gate + " cat /proc/net/netfilter/nfnetlink_queue",
		"nsenter --net=" + gate + " nstat -az IpForwDatagrams IpOutDiscards IpInDiscards",
		"nsenter --net=" + gate + " ip -s link",
		"nsenter --net=" + netns + " ss -tin",
	} {
		out, _ := exec.Command("sh", "-c", c).CombinedOutput()
		t.Logf("%s:\n%s", c, out)
	}
}

// sinceOrNone is t - u, or "none" when u is zero.
func sinceOrNone(t, u time.Time) string {
	if u.IsZero() {
		return "none"
	}
	return t.Sub(u).Round(time.Millisecond).String()
}
