package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/iorrc/rrc/shim"
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
const waitBudgetMargin = 200 * time.Millisecond

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
	rctx, rcancel := context.WithTimeout(ctx, before)
	if err := w.Run(rctx, 10*time.Second); err != nil {
		rcancel()
		t.Fatalf("before the crash: %v", err)
	}
	rcancel()
	n0 := w.Responses()
	mean, p99 := w.Latency()
	rate := float64(n0) / before.Seconds()
	t.Logf("before the crash: %d responses in %s (%.1f/s), latency mean %s p99 %s", n0, before, rate, mean.Round(time.Millisecond), p99.Round(time.Millisecond))
	// Gated at the container's OUTPUT (TCP Small Queues) this was ~15/s;
	// one response per connection per epoch is 80/s.
	if st := waitStatus(t, l, "a", id, "primary status", time.Second, func(shim.PublishedStatus) bool { return true }); st.Engine.PauseMS.N > 0 {
		t.Logf("primary: pause mean %.1f ms, ack mean %.1f ms, skipped epochs %d, deferred %d", st.Engine.PauseMS.Mean, st.Engine.AckMS.Mean, st.Engine.SkippedEpochs, st.Engine.DeferredEpochs)
	}
	if rate < minWebRate() {
		t.Errorf("%.1f responses/s before the crash, want at least %.0f", rate, minWebRate())
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
		} else if d := g.After.Sub(up); d > servedAfterUp {
			t.Errorf("connection %d: served %s after the address came up, want ≤ %s", g.Conn, d.Round(time.Millisecond), servedAfterUp)
		}
	}
	if worst.Wait > budget+waitBudgetMargin {
		t.Errorf("longest wait %s > detection + restore + 0.5 s (%s) + %s", worst.Wait.Round(time.Millisecond), budget.Round(time.Millisecond), waitBudgetMargin)
	}
	if w.Responses() <= n0 {
		t.Errorf("no responses after the failover")
	}
}

// minWebRate is the rate the 8 clients must reach before the crash: well
// below issue 17's target (70/s, which make bench measures), as this test
// shares two cores with other work (32/s seen with a load average of 11),
// yet above what the gate at the container's OUTPUT allowed (~15/s);
// RRC_WEB_MIN_RATE overrides it.
func minWebRate() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("RRC_WEB_MIN_RATE"), 64); err == nil {
		return v
	}
	return 25
}

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

	took, _, err := lab.Download(l.Netns("client"), addr, lab.WWWBig, 60*time.Second)
	if err != nil {
		diagnoseWeb(t, l, "a", id)
		t.Fatalf("download with no failure: %v", err)
	}
	t.Logf("10 MB download, epoch mode at 100 ms, no failure: %s", took.Round(time.Millisecond))
	if took > maxDownload() {
		t.Errorf("10 MB download took %s, want ≤ %s", took.Round(time.Millisecond), maxDownload())
	}

	var marks []time.Time
	crashAt := crashDuring(t, l, "a", took/3, func() {
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
		cut.Sub(lastBefore).Round(time.Millisecond), firstAfter.Sub(up).Round(time.Millisecond))
	if !firstAfter.IsZero() && firstAfter.Sub(up) > servedAfterUp+time.Duration(1e9*1.0/10) {
		// One MiB after the address is up: 0.5 s plus the time a MiB
		// takes at the restored connection's restarted window.
		t.Errorf("first MiB after the failover came %s after the address came up", firstAfter.Sub(up).Round(time.Millisecond))
	}
}

// maxDownload bounds the 10 MB download with no failure: issue 17's 2 s,
// doubled for a shared two-core machine; RRC_MAX_DOWNLOAD overrides it.
func maxDownload() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RRC_MAX_DOWNLOAD")); err == nil {
		return d
	}
	return 4 * time.Second
}


// diagnoseWeb logs what the gate and the container's sockets look like on
// host h: the engine's status, the gate namespace's queues and counters,
// the container's TCP sockets.
func diagnoseWeb(t *testing.T, l *lab.Lab, h, id string) {
	t.Helper()
	b, _ := os.ReadFile(shim.StatusFile(l.State(h)+"/rrc", l.Namespace(h), id))
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
