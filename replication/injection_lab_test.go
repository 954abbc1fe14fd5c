// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/test/lab"
)

// The fault injection test: the primary host crashes at exact points of the
// epoch (the helper's side, the injector: injector_test.go).

// injection is one crash: the point, its epoch (After) and, mid-transfer,
// the bytes sent (injectArgs without the FIFOs).
type injection struct {
	Point string
	After uint64
	Bytes int64
}

func (i injection) String() string {
	s := i.Point
	if i.Point == injMidTransfer {
		if i.Bytes < 0 {
			s += "@last"
		} else {
			s += "@" + strconv.FormatInt(i.Bytes>>10, 10) + "KiB"
		}
	}
	if i.Point != injRandom {
		s += "+" + strconv.FormatUint(i.After, 10)
	}
	return s
}

// injections: every point, at different epochs after the clients start
// (After), mid-transfer at several offsets (the test Redis's checkpoint is
// ≈2.5 MB), and some crashes at random times between the points.
var injections = []injection{
	{Point: injBeforeFreeze, After: 1},
	{Point: injFrozen, After: 1},
	{Point: injThawed, After: 2},
	{Point: injBeforeSend, After: 1},
	{Point: injMidTransfer, After: 2, Bytes: 0},
	{Point: injMidTransfer, After: 1, Bytes: 300 << 10},
	{Point: injMidTransfer, After: 3, Bytes: 1 << 20},
	{Point: injMidTransfer, After: 2, Bytes: 2 << 20},
	{Point: injMidTransfer, After: 4, Bytes: -1},
	{Point: injSent, After: 1},
	{Point: injAckHeld, After: 2},
	{Point: injReleased, After: 1},
	{Point: injRandom},
	{Point: injBeforeFreeze, After: 3},
	{Point: injInputHeld, After: 2},
	{Point: injFrozen, After: 4},
	{Point: injThawed, After: 3},
	{Point: injBeforeSend, After: 3},
	{Point: injSent, After: 3},
	{Point: injAckHeld, After: 4},
	{Point: injReleased, After: 3},
	{Point: injRandom},
	{Point: injRandom},
	{Point: injRandom},
	{Point: injInputHeld, After: 4},
	{Point: injMidTransfer, After: 1, Bytes: 64 << 10},
	{Point: injSent, After: 2},
	{Point: injAckHeld, After: 1},
	{Point: injReleased, After: 2},
	{Point: injRandom},
}

type injResult struct {
	name            string
	ran, ok         bool
	restored        uint64
	totalMS         float64
	crashToOpen     time.Duration
	injectToCrash   time.Duration
	firstReplyAfter time.Duration
}

// TestInjectedPrimaryFailuresLab crashes the primary host at many exact
// points of the epoch (and a few random times), one replicated Redis after
// another in one lab (host a restarted after each crash), two client
// connections busy each time. Every one must end with the backup promoted,
// both connections carrying on without a reconnect, every acknowledged
// write readable, no INCR reply contradicting an earlier one, and the
// restored epoch between the newest the backup acknowledged and the newest
// sent completely.
//
// In hybrid mode the clients' replies were released on the log, ahead of
// the checkpoints, so every failover also replays the log after the
// restored checkpoint; Redis answers the same again, so nothing may
// diverge or be reset.
func TestInjectedPrimaryFailuresLab(t *testing.T) {
	l := startEngineLab(t, "rrcinj", "10.89.0")
	for _, mode := range []replication.Mode{replication.ModeEpoch, replication.ModeHybrid} {
		t.Run(string(mode), func(t *testing.T) { testInjectedFailures(t, l, mode) })
	}
}

func testInjectedFailures(t *testing.T, l *lab.Lab, mode replication.Mode) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("random crash delays: seed %d", seed)
	start := time.Now()
	var results []injResult
	inARow := 0
	for i, inj := range injections {
		res := injResult{name: fmt.Sprintf("%02d-%s", i+1, inj)}
		res.ok = t.Run(res.name, func(t *testing.T) { res.ran = true; runInjection(t, l, mode, i+1, inj, rng, &res) })
		if !res.ran { // -run chose others
			continue
		}
		results = append(results, res)
		if inARow++; res.ok {
			inARow = 0
		}
		if inARow == 3 {
			t.Errorf("3 injections in a row failed: the rest not run")
			break
		}
	}
	var ok int
	var totals, open []float64
	for _, r := range results {
		if r.ok {
			ok++
			totals = append(totals, r.totalMS)
			open = append(open, float64(r.crashToOpen.Milliseconds()))
		}
	}
	if len(totals) > 0 {
		t.Logf("failover total (last heard → reachable) ms: %s; crash → reachable ms: %s; %s for %d injections",
			spread(totals), spread(open), time.Since(start).Round(time.Second), len(results))
	}
	t.Logf("%d/%d injections recovered", ok, len(results))
	if ok != len(results) {
		t.Errorf("%d of %d injections not recovered", len(results)-ok, len(results))
	}
}

func spread(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("min %.0f median %.0f max %.0f", s[0], s[len(s)/2], s[len(s)-1])
}

func runInjection(t *testing.T, l *lab.Lab, mode replication.Mode, n int, inj injection, rng *rand.Rand, res *injResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	crashA := prepareHosts(ctx, t, l)
	ia, ctl, reports := injectFIFOs(t, inj)
	r := startRedisPair(t, l, redisPair{ID: fmt.Sprintf("inj%s%d", mode[:1], n), Inject: &ia, Mode: mode})
	clients := startClients(t, l, r.serviceIP)
	defer clients.stop()
	if err := clients.busy(2, time.Time{}); err != nil {
		t.Fatalf("clients before the injection: %v", err)
	}

	rep, lower := injectFault(t, inj, r, rng, ctl, reports)
	crashAt := time.Now()
	res.injectToCrash = crashAt.Sub(rep.At)
	pst, _ := r.primary.read() // its last status (≤ 50 ms old)
	r.primary.killed.Store(true)
	if err := crashA(); err != nil {
		t.Fatalf("crash a: %v", err)
	}

	after := r.backup.wait(t, "promotion", 20*time.Second, func(s helperStatus) bool {
		switch s.Engine.State {
		case replication.StatePrimaryAfterFailover, replication.StateFailed, replication.StateDisconnected:
			return true
		}
		return false
	})
	if after.Engine.State != replication.StatePrimaryAfterFailover || after.Engine.Failover == nil {
		t.Fatalf("backup did not take over: %+v (primary's last status: %s)\nbackup log:\n%s", after.Engine, primaryNote(pst), r.backup.logTail())
	}
	f := after.Engine.Failover
	open := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	res.restored, res.totalMS, res.crashToOpen = f.Epoch, f.TotalMS, open.Sub(crashAt)

	// Both connections carry on: three more rounds each after the takeover.
	if err := clients.busy(3, open); err != nil {
		t.Errorf("clients after the failover (connections must survive): %v\n%s", err, restoredDiagnostics(l, r, after))
	}
	clients.stop()
	res.firstReplyAfter = clients.verify(t, open)
	checkRestoredEpoch(t, inj, rep, lower, after, pst)
	replayed := ""
	if mode == replication.ModeHybrid {
		rp := f.Replay
		if rp == nil {
			t.Fatalf("hybrid failover without a replay: %+v", f)
		}
		if rp.Reset != 0 {
			t.Errorf("the replay reset %d connections of a deterministic server: %+v", rp.Reset, rp)
		}
		replayed = fmt.Sprintf("; replay %.1f ms: %d records, %d inputs, %d outputs, %d waits, %d reset", f.ReplayMS, rp.Records, rp.Inputs, rp.Outputs, rp.Waits, rp.Reset)
	}
	c1, c2 := clients.ws[0], clients.ws[1]
	t.Logf("%s: %s; restored epoch %d; detection %.1f ms, restore %.1f ms, total (last heard → reachable) %.1f ms, crash → reachable %s, last heard %s after the injection; clients: %d+%d rounds, first reply %s after reachable, longest reply %s%s",
		inj, injectionNote(inj, rep, pst, res), f.Epoch, f.DetectionMS, f.RestoreMS, f.TotalMS, res.crashToOpen.Round(time.Millisecond),
		f.LastHeard.Sub(rep.At).Round(time.Millisecond), len(c1.Keys), len(c2.Keys),
		res.firstReplyAfter.Round(time.Millisecond), max(c1.Slowest, c2.Slowest).Round(time.Millisecond), replayed)
}

// prepareHosts restarts host a if the previous injection crashed it, and
// returns crashA, which crashes a (once: later calls do nothing). At the
// end of the test, after both engines ended, a is crashed, and b too after
// a failure (e.g. a backup that had to be killed): nothing of this pair may
// stay, so that the next injection starts clean.
func prepareHosts(ctx context.Context, t *testing.T, l *lab.Lab) (crashA func() error) {
	t.Helper()
	if l.NetnsInode("a") == 0 { // crashed by the previous injection
		if err := l.Restart(ctx, "a"); err != nil {
			t.Fatalf("restart a: %v", err)
		}
	}
	var crashed atomic.Bool
	crashA = func() error {
		if crashed.Swap(true) {
			return nil
		}
		return l.Crash(context.WithoutCancel(ctx), "a")
	}
	t.Cleanup(func() {
		if err := crashA(); err != nil {
			t.Errorf("crash a: %v", err)
		}
		if t.Failed() {
			ctx := context.WithoutCancel(ctx)
			if err := l.Crash(ctx, "b"); err != nil {
				t.Errorf("crash b: %v", err)
			} else if err := l.Restart(ctx, "b"); err != nil {
				t.Errorf("restart b: %v", err)
			}
		}
	})
	return crashA
}

// injectFIFOs makes the helper's arguments for inj and their two FIFOs,
// which the test holds open read-write (neither side's open blocks): ctl
// to arm the helper, and the report it sends when it dies.
func injectFIFOs(t *testing.T, inj injection) (ia injectArgs, ctl *os.File, reports <-chan injectReport) {
	t.Helper()
	dir := t.TempDir()
	ia = injectArgs{Point: inj.Point, After: inj.After, Bytes: inj.Bytes,
		Ctl: filepath.Join(dir, "ctl"), Notify: filepath.Join(dir, "notify")}
	var notify *os.File
	for _, f := range []struct {
		path string
		f    **os.File
	}{{ia.Ctl, &ctl}, {ia.Notify, &notify}} {
		if err := unix.Mkfifo(f.path, 0o600); err != nil {
			t.Fatal(err)
		}
		fd, err := os.OpenFile(f.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fd.Close() })
		*f.f = fd
	}
	rc := make(chan injectReport, 1)
	go func() {
		sc := bufio.NewScanner(notify)
		for sc.Scan() {
			var r injectReport
			if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
				rc <- r
				return
			}
		}
	}()
	return ia, ctl, rc
}

// injectFault arms the helper and waits until it dies at the point, or
// for a random point lets a random time (< 700 ms) pass. It returns what
// the primary knew then, and the oldest epoch the backup may restore.
func injectFault(t *testing.T, inj injection, r *replicatedRedis, rng *rand.Rand, ctl *os.File, reports <-chan injectReport) (rep injectReport, lower uint64) {
	if _, err := ctl.WriteString("arm\n"); err != nil {
		t.Fatal(err)
	}
	if inj.Point == injRandom {
		time.Sleep(time.Duration(rng.Int64N(int64(700 * time.Millisecond))))
		st, err := r.primary.read()
		if err != nil {
			t.Fatal(err)
		}
		e := st.Engine
		return injectReport{Point: injRandom, Epoch: e.Epoch, At: time.Now(), AckSeen: e.CommittedEpoch}, e.CommittedEpoch
	}
	select {
	case rep = <-reports:
		return rep, rep.AckSeen
	case <-time.After(15 * time.Second):
		t.Fatalf("the primary did not reach %s\nprimary log:\n%s", inj, r.primary.logTail())
		return
	}
}

// injClients are the test's two client connections, each with its own
// counter and keys, busy until stopped.
type injClients struct {
	ws   []*lab.RedisWorkload
	stop func() // stops them and waits; again: nothing
}

func startClients(t *testing.T, l *lab.Lab, serviceIP string) *injClients {
	t.Helper()
	c := &injClients{}
	for _, prefix := range []string{"c1:", "c2:"} {
		nc, err := lab.DialInNetns(l.Netns("client"), serviceIP+":6379")
		if err != nil {
			t.Fatalf("client connect: %v", err)
		}
		t.Cleanup(func() { nc.Close() })
		w := lab.NewRedisWorkload(nc)
		w.Prefix, w.Fresh = prefix, true
		c.ws = append(c.ws, w)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range c.ws {
		wg.Go(func() { w.RunUntil(stop) })
	}
	c.stop = sync.OnceFunc(func() { close(stop); wg.Wait() })
	return c
}

// busy waits (up to 20 s) until every connection has done rounds rounds
// (two replies each) after since, none broken.
func (c *injClients) busy(rounds int, since time.Time) error {
	return lab.WaitFor(20*time.Second, func() error {
		for _, w := range c.ws {
			if err := w.Err(); err != nil {
				return fmt.Errorf("%s %w", w.Prefix, err)
			}
			if got := w.RepliesAfter(since); got < 2*rounds {
				return fmt.Errorf("%s %d replies (want %d)", w.Prefix, got, 2*rounds)
			}
		}
		return nil
	})
}

// verify (once stopped): no connection broke, and each one's INCRs and
// SETs are all there (lab.RedisWorkload.Verify, fresh). It returns how
// soon after open the first reply came (an hour: none).
func (c *injClients) verify(t *testing.T, open time.Time) time.Duration {
	first := time.Hour
	for _, w := range c.ws {
		if err := w.Err(); err != nil {
			t.Errorf("%s connection broke: %v", w.Prefix, err)
		}
		if err := w.Verify(); err != nil {
			t.Errorf("%s %v", w.Prefix, err)
		}
		if d := w.FirstReplyAfter(open); d > 0 {
			first = min(first, d)
		}
	}
	return first
}

// checkRestoredEpoch: the restored epoch is no older than what the backup
// acknowledged (lower: its output may have been released), no newer than
// what was completely sent, and where the point says exactly.
func checkRestoredEpoch(t *testing.T, inj injection, rep injectReport, lower uint64, after, pst helperStatus) {
	R := after.Engine.Failover.Epoch
	if rc := after.Engine.Restored; rc == nil || rc.Epoch != R {
		t.Errorf("restored container %+v, failover epoch %d", rc, R)
	}
	if R < lower {
		t.Errorf("restored epoch %d is older than epoch %d, which the backup had acknowledged", R, lower)
	}
	if inj.Point == injRandom {
		return
	}
	upper := max(rep.SendDone, rep.InFlight)
	if inj.Point == injMidTransfer {
		upper = rep.SendDone // the one in flight was never complete
		if R >= rep.Epoch {
			t.Errorf("restored epoch %d: a partly sent checkpoint (%d) was committed", R, rep.Epoch)
		}
	}
	if R > upper {
		t.Errorf("restored epoch %d was never completely sent (newest complete %d, in flight %d)", R, rep.SendDone, rep.InFlight)
	}
	switch inj.Point {
	case injBeforeSend:
		if R >= rep.Epoch {
			t.Errorf("restored epoch %d: checkpoint %d was never sent", R, rep.Epoch)
		}
	case injSent:
		if R > rep.Epoch {
			t.Errorf("restored epoch %d: nothing after %d was sent", R, rep.Epoch)
		}
	case injAckHeld, injReleased:
		if R < rep.Epoch {
			t.Errorf("restored epoch %d, but the backup acknowledged %d", R, rep.Epoch)
		}
	}
	// In epoch mode the gate releases by epoch; a hybrid gate releases on
	// the log's acknowledgements, whatever the checkpoints do.
	if g := pst.Engine.Gate; inj.Point == injAckHeld && pst.Engine.Mode != replication.ModeHybrid && (g == nil || g.ReleasedEpoch >= rep.Epoch) {
		t.Errorf("ack of epoch %d withheld from the engine, yet its gate says %+v", rep.Epoch, g)
	}
	if rep.Epoch <= rep.Armed {
		t.Errorf("injected at epoch %d, armed after checkpoint %d: not the epoch asked for", rep.Epoch, rep.Armed)
	}
}

// injectionNote says where the primary died and what it knew then.
func injectionNote(inj injection, rep injectReport, pst helperStatus, res *injResult) string {
	if inj.Point == injRandom {
		return fmt.Sprintf("crashed at a random time [primary %s]", primaryNote(pst))
	}
	detail := ""
	if rep.Detail != "" {
		detail = " (" + rep.Detail + ")"
	}
	return fmt.Sprintf("injected at epoch %d%s [armed after checkpoint %d; sent %d, in flight %d, acknowledged %d, released ≤ %d; primary %s], crash %s later",
		rep.Epoch, detail, rep.Armed, rep.SendDone, rep.InFlight, rep.AckSeen, rep.AckForwarded, primaryNote(pst),
		res.injectToCrash.Round(time.Millisecond))
}

// primaryNote says what the primary's status said last, and whether it had
// lost its backup before the injection (a false failure detection: it then
// released output unreplicated and re-paired, and the backup rightly has
// nothing consistent to promote until the re-paired primary's first
// checkpoint is committed).
func primaryNote(st helperStatus) string {
	e := st.Engine
	s := fmt.Sprintf("%s, epoch %d, acknowledged %d", e.State, e.Epoch, e.CommittedEpoch)
	if e.Reason != "" {
		s += ", reason " + strconv.Quote(e.Reason)
	}
	if e.Repairs > 0 {
		s += fmt.Sprintf("; it had gone degraded and re-paired %d time(s) before the injection: a false failure detection?", e.Repairs)
	}
	return s
}

// restoredDiagnostics describes the restored container's tasks and the
// TCP connections on both ends, for a failure after the takeover.
func restoredDiagnostics(l *lab.Lab, r *replicatedRedis, st helperStatus) string {
	var b strings.Builder
	if rc := st.Engine.Restored; rc != nil && rc.Pid > 0 {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", rc.Pid))
		for _, task := range tasks {
			stat, _ := os.ReadFile(task + "/stat")
			wchan, _ := os.ReadFile(task + "/wchan")
			fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			state := "?"
			if len(fields) > 0 {
				state = fields[0]
			}
			fmt.Fprintf(&b, "restored task %s: state %s, wchan %s\n", filepath.Base(task), state, wchan)
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", rc.Pid))
		for _, line := range strings.Split(string(cg), "\n") {
			if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[1] == "freezer" {
				fs, err := os.ReadFile("/sys/fs/cgroup/freezer" + parts[2] + "/freezer.state")
				fmt.Fprintf(&b, "freezer %s: %s %v\n", parts[2], strings.TrimSpace(string(fs)), err)
			}
		}
	}
	for _, c := range []struct{ what, netns string }{{"service netns on b", r.backupNetns}, {"client", l.Netns("client")}} {
		out, err := exec.Command("nsenter", "--net="+c.netns, "ss", "-tnie").CombinedOutput()
		fmt.Fprintf(&b, "ss -tnie (%s): %v\n%s", c.what, err, out)
	}
	return b.String()
}
