package replication_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
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

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/runtime"
	"github.com/iorrc/rrc/test/lab"
	"golang.org/x/sys/unix"
)

// Fault injection: the primary host fails at an exact point of an epoch.
//
// The primary engine process (enginehelper_test.go) wraps what the engine
// drives: the checkpointer's freeze hooks, the peer's Send (and the files it
// reads) and the backup's acks. When the armed point comes, the helper
// "dies" there: from that instant nothing of the engine reaches the world
// any more (every wrapped call blocks for ever; acks, a failure report or
// the end of the connection are swallowed, so no output is released and
// nothing more is sent), while the peer session keeps heartbeating on its
// own goroutine. It tells the test (a FIFO), which crashes host a at once
// (links cut first): the backup detects the failure only because of the
// crash, and must restore a checkpoint that keeps everything a client has
// seen acknowledged.

// Injection points.
const (
	injBeforeFreeze = "before-freeze"    // BeforeFreeze hook, before the input hold: CRIU up, container running
	injInputHeld    = "input-held"       // input held, container not yet frozen
	injFrozen       = "frozen"           // Frozen hook after the seal: frozen, epoch sealed, nothing dumped
	injThawed       = "thawed"           // Thawed hook after the input release: dumped, running again
	injBeforeSend   = "before-send"      // checkpoint taken, its transfer not started
	injMidTransfer  = "mid-transfer"     // the sender has read Bytes of the checkpoint's files
	injSent         = "sent"             // Send returned (every frame queued, end included), no ack yet
	injAckHeld      = "ack-not-released" // the backup's ack received, not given to the engine: output held
	injReleased     = "released"         // right after the engine released the acked epoch's output
	injRandom       = "random"           // no point: the test crashes a at a random time
)

// injectArgs arm the primary helper's fault injection (helperArgs.Inject).
type injectArgs struct {
	Point string
	// After: the point of the After-th checkpoint (epoch) after arming.
	After uint64
	// Bytes (mid-transfer): bytes of the checkpoint read before blocking;
	// negative or too large: all but the last byte.
	Bytes  int64
	Ctl    string // FIFO the test writes "arm" to (the clients are busy)
	Notify string // FIFO the helper writes one injectReport (a JSON line) to
}

// injectReport is what the helper knew when it died.
type injectReport struct {
	Point string
	// Epoch at the point: the checkpoint's number for the hook points (its
	// epoch unless a checkpoint failed), the wire epoch sent or acked for
	// the others.
	Epoch        uint64
	Detail       string `json:",omitempty"`
	Armed        uint64 // checkpoints started when armed
	Checkpoints  uint64 // checkpoints started
	SendDone     uint64 // newest epoch whose Send returned without error
	InFlight     uint64 // epoch being sent (0: none)
	AckSeen      uint64 // newest epoch the backup acknowledged, as far as the helper heard
	AckForwarded uint64 // newest ack given to the engine (its output may be released)
	At           time.Time
}

// injector is the helper's side.
type injector struct {
	a       injectArgs
	log     *slog.Logger
	notify  *os.File
	stopped atomic.Bool // set under mu

	mu     sync.Mutex
	armed  bool
	target uint64
	rep    injectReport // counters
}

func newInjector(a injectArgs, log *slog.Logger) (*injector, error) {
	j := &injector{a: a, log: log}
	var err error
	// The test holds both FIFOs open read-write: neither open blocks.
	if j.notify, err = os.OpenFile(a.Notify, os.O_WRONLY, 0); err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	ctl, err := os.Open(a.Ctl)
	if err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	go func() {
		defer ctl.Close()
		sc := bufio.NewScanner(ctl)
		for sc.Scan() {
			if sc.Text() == "arm" {
				j.mu.Lock()
				if !j.armed {
					j.armed, j.rep.Armed, j.target = true, j.rep.Checkpoints, j.rep.Checkpoints+a.After
					j.log.Info("fault injection armed", "point", a.Point, "at_checkpoint", j.target)
				}
				j.mu.Unlock()
			}
		}
	}()
	return j, nil
}

// matchesLocked: this is the armed point (j.mu held).
func (j *injector) matchesLocked(point string, epoch uint64) bool {
	return j.armed && !j.stopped.Load() && point == j.a.Point && epoch >= j.target
}

func (j *injector) matches(point string, epoch uint64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.matchesLocked(point, epoch)
}

// stopLocked kills the engine here (j.mu held); false if it already was.
func (j *injector) stopLocked(point string, epoch uint64, detail string) (injectReport, bool) {
	if j.stopped.Load() {
		return injectReport{}, false
	}
	j.stopped.Store(true)
	r := j.rep
	r.Point, r.Epoch, r.Detail, r.At = point, epoch, detail, time.Now()
	return r, true
}

// announce tells the test (first thing: it crashes the host on it).
func (j *injector) announce(r injectReport) {
	b, _ := json.Marshal(r)
	j.notify.Write(append(b, '\n'))
	j.log.Warn("fault injected: the primary is dead from here", "point", r.Point, "epoch", r.Epoch, "detail", r.Detail)
}

// fire stops at point without blocking the caller.
func (j *injector) fire(point string, epoch uint64, detail string) {
	j.mu.Lock()
	r, ok := j.stopLocked(point, epoch, detail)
	j.mu.Unlock()
	if ok {
		j.announce(r)
	}
}

// halt blocks the calling goroutine for ever: the host is being crashed.
func (j *injector) halt() { <-make(chan struct{}) }

func (j *injector) blockIfStopped() {
	if j.stopped.Load() {
		j.halt()
	}
}

// at is a blocking point: dies here if armed for it.
func (j *injector) at(point string, epoch uint64) {
	j.blockIfStopped()
	if j.matches(point, epoch) {
		j.fire(point, epoch, "")
		j.halt()
	}
}

// checkpointer wraps the container's checkpointer: the freeze hooks.
func (j *injector) checkpointer(c replication.HookedCheckpointer) replication.Checkpointer {
	return injCheckpointer{HookedCheckpointer: c, j: j}
}

type injCheckpointer struct {
	replication.HookedCheckpointer
	j *injector
}

func (c injCheckpointer) Checkpoint(ctx context.Context, dir string, frozen func()) (runtime.CheckpointStats, error) {
	return c.CheckpointWithHooks(ctx, dir, runtime.CheckpointHooks{Frozen: frozen})
}

func (c injCheckpointer) CheckpointWithHooks(ctx context.Context, dir string, h runtime.CheckpointHooks) (runtime.CheckpointStats, error) {
	j := c.j
	j.blockIfStopped()
	j.mu.Lock()
	j.rep.Checkpoints++
	n := j.rep.Checkpoints
	j.mu.Unlock()
	call := func(f func()) {
		if f != nil {
			f()
		}
	}
	return c.HookedCheckpointer.CheckpointWithHooks(ctx, dir, runtime.CheckpointHooks{
		BeforeFreeze: func() {
			j.at(injBeforeFreeze, n)
			call(h.BeforeFreeze)
			j.at(injInputHeld, n)
		},
		Frozen: func() {
			j.blockIfStopped()
			call(h.Frozen)
			j.at(injFrozen, n)
		},
		Thawed: func() {
			j.blockIfStopped()
			call(h.Thawed)
			j.at(injThawed, n)
		},
	})
}

// dial replaces peer.Dial: the same session, its acks, failure reports and
// sends wrapped.
func (j *injector) dial(addr string, creds *peertls.Credentials) replication.DialFunc {
	return func(ctx context.Context, o peer.Options) (replication.CheckpointSender, error) {
		j.blockIfStopped()
		onAck, onFailed := o.OnAck, o.OnPeerFailed
		o.OnAck = func(a peer.Ack) {
			// Never blocks: the reader goroutine goes on reading heartbeats.
			j.mu.Lock()
			defer j.mu.Unlock()
			if j.stopped.Load() {
				return // a dead primary hears nothing
			}
			if a.Err == nil {
				j.rep.AckSeen = max(j.rep.AckSeen, a.Epoch)
				if j.matchesLocked(injAckHeld, a.Epoch) {
					if r, ok := j.stopLocked(injAckHeld, a.Epoch, ""); ok {
						go j.announce(r)
					}
					return
				}
			}
			onAck(a) // under j.mu: a stop cannot slip between the check and the release
			if a.Err == nil {
				j.rep.AckForwarded = max(j.rep.AckForwarded, a.Epoch)
				if j.matchesLocked(injReleased, a.Epoch) {
					if r, ok := j.stopLocked(injReleased, a.Epoch, ""); ok {
						go j.announce(r)
					}
				}
			}
		}
		o.OnPeerFailed = func(f peer.PeerFailure) {
			if !j.stopped.Load() {
				onFailed(f)
			}
		}
		s, err := peer.Dial(ctx, addr, creds, o)
		if err != nil {
			return nil, err
		}
		w := &injSender{CheckpointSender: s, j: j, done: make(chan struct{})}
		go func() {
			<-s.Done()
			j.mu.Lock()
			defer j.mu.Unlock()
			if !j.stopped.Load() { // a dead primary does not go degraded
				close(w.done)
			}
		}()
		return w, nil
	}
}

type injSender struct {
	replication.CheckpointSender
	j    *injector
	done chan struct{}
}

func (w *injSender) Done() <-chan struct{} { return w.done }

func (w *injSender) Send(ctx context.Context, c peer.Checkpoint) error {
	j := w.j
	j.at(injBeforeSend, c.Epoch)
	f := &injFS{j: j, epoch: c.Epoch, limit: -1}
	if j.matches(injMidTransfer, c.Epoch) {
		total := sourcesSize(c.Sources)
		f.limit = j.a.Bytes
		if f.limit < 0 || f.limit >= total {
			f.limit = total - 1
		}
		f.detail = fmt.Sprintf("after %d of %d bytes read", f.limit, total)
	}
	srcs := slices.Clone(c.Sources)
	for i := range srcs {
		g := *f
		g.FS, g.read = srcs[i].FS, &f.n
		srcs[i].FS = &g
	}
	c.Sources = srcs
	j.mu.Lock()
	j.rep.InFlight = c.Epoch
	j.mu.Unlock()
	err := w.CheckpointSender.Send(ctx, c)
	j.mu.Lock()
	j.rep.InFlight = 0
	if err == nil {
		j.rep.SendDone = max(j.rep.SendDone, c.Epoch)
	}
	j.mu.Unlock()
	j.at(injSent, c.Epoch)
	return err
}

func sourcesSize(srcs []peer.Source) int64 {
	var total int64
	for _, s := range srcs {
		fs.WalkDir(s.FS, ".", func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
				}
			}
			return nil
		})
	}
	return total
}

// injFS counts (and with a limit, stops) the bytes the sender reads; after
// the stop every read blocks.
type injFS struct {
	fs.FS
	j      *injector
	epoch  uint64
	limit  int64 // -1: none
	detail string
	n      int64  // bytes read (in the first copy)
	read   *int64 // shared by the sources of one checkpoint
}

func (f *injFS) Open(name string) (fs.File, error) {
	f.j.blockIfStopped()
	file, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return &injFile{File: file, fs: f}, nil
}

func (f *injFS) Stat(name string) (fs.FileInfo, error)      { return fs.Stat(f.FS, name) }
func (f *injFS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(f.FS, name) }

type injFile struct {
	fs.File
	fs *injFS
}

func (r *injFile) Read(p []byte) (int, error) {
	f := r.fs
	f.j.blockIfStopped()
	if f.limit >= 0 {
		rem := f.limit - atomic.LoadInt64(f.read)
		if rem <= 0 {
			f.j.fire(injMidTransfer, f.epoch, f.detail)
			f.j.halt()
		}
		if int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	n, err := r.File.Read(p)
	atomic.AddInt64(f.read, int64(n))
	return n, err
}

// --- the test ----------------------------------------------------------------

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
func TestInjectedPrimaryFailuresLab(t *testing.T) {
	l := startEngineLab(t, "rrcinj", "10.89.0")
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("random crash delays: seed %d", seed)
	start := time.Now()
	var results []injResult
	inARow := 0
	for i, inj := range injections {
		res := injResult{name: fmt.Sprintf("%02d-%s", i+1, inj)}
		res.ok = t.Run(res.name, func(t *testing.T) { res.ran = true; runInjection(t, l, i+1, inj, rng, &res) })
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

func runInjection(t *testing.T, l *lab.Lab, n int, inj injection, rng *rand.Rand, res *injResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if l.NetnsInode("a") == 0 { // crashed by the previous injection
		if err := l.Restart(ctx, "a"); err != nil {
			t.Fatalf("restart a: %v", err)
		}
	}
	var crashed atomic.Bool
	crashA := func() error {
		if crashed.Swap(true) {
			return nil
		}
		return l.Crash(context.WithoutCancel(ctx), "a")
	}
	// Runs last (after both engines ended): nothing of this pair may stay on
	// a, nor on b after a failure (e.g. a backup that had to be killed), so
	// that the next injection starts clean.
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

	dir := t.TempDir()
	ia := injectArgs{Point: inj.Point, After: inj.After, Bytes: inj.Bytes,
		Ctl: filepath.Join(dir, "ctl"), Notify: filepath.Join(dir, "notify")}
	var ctl, notify *os.File
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
	reports := make(chan injectReport, 1)
	go func() {
		sc := bufio.NewScanner(notify)
		for sc.Scan() {
			var r injectReport
			if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
				reports <- r
				return
			}
		}
	}()

	r := startRedisPair(t, l, redisPair{ID: fmt.Sprintf("inj%d", n), Inject: &ia})

	// Two client connections, each with its own counter and keys, busy
	// until told to stop.
	var clients []*taggedWorkload
	for _, tag := range []string{"c1", "c2"} {
		nc, err := lab.DialInNetns(l.Netns("client"), r.serviceIP+":6379")
		if err != nil {
			t.Fatalf("client connect: %v", err)
		}
		t.Cleanup(func() { nc.Close() })
		clients = append(clients, newTaggedWorkload(tag, nc))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.loop(stop) }()
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClients()
	busy := func(rounds int, since time.Time) error {
		return lab.WaitFor(20*time.Second, func() error {
			for _, c := range clients {
				if err := c.error(); err != nil {
					return fmt.Errorf("%s: %w", c.tag, err)
				}
				if got := c.repliesAfter(since); got < 2*rounds {
					return fmt.Errorf("%s: %d replies (want %d)", c.tag, got, 2*rounds)
				}
			}
			return nil
		})
	}
	if err := busy(2, time.Time{}); err != nil {
		t.Fatalf("clients before the injection: %v", err)
	}

	if _, err := ctl.WriteString("arm\n"); err != nil {
		t.Fatal(err)
	}
	var rep injectReport
	var lower uint64 // the restored epoch may not be older
	if inj.Point == injRandom {
		time.Sleep(time.Duration(rng.Int64N(int64(700 * time.Millisecond))))
		st, err := r.primary.read()
		if err != nil {
			t.Fatal(err)
		}
		rep = injectReport{Point: injRandom, Epoch: st.Engine.Epoch, At: time.Now(), AckSeen: st.Engine.CommittedEpoch}
		lower = st.Engine.CommittedEpoch
	} else {
		select {
		case rep = <-reports:
		case <-time.After(15 * time.Second):
			t.Fatalf("the primary did not reach %s\nprimary log:\n%s", inj, r.primary.logTail())
		}
		lower = rep.AckSeen
	}
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
	if err := busy(3, open); err != nil {
		t.Errorf("clients after the failover (connections must survive): %v\n%s", err, restoredDiagnostics(l, r, after))
	}
	stopClients()
	res.firstReplyAfter = time.Hour
	for _, c := range clients {
		if err := c.error(); err != nil {
			t.Errorf("%s: connection broke: %v", c.tag, err)
		}
		if err := c.verify(); err != nil {
			t.Errorf("%s: %v", c.tag, err)
		}
		res.firstReplyAfter = min(res.firstReplyAfter, c.firstReplyAfter(open))
	}

	// The restored epoch: no older than what the backup acknowledged (its
	// output may have been released), no newer than what was completely sent.
	R := f.Epoch
	if rc := after.Engine.Restored; rc == nil || rc.Epoch != R {
		t.Errorf("restored container %+v, failover epoch %d", rc, R)
	}
	if R < lower {
		t.Errorf("restored epoch %d is older than epoch %d, which the backup had acknowledged", R, lower)
	}
	if inj.Point != injRandom {
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
		if g := pst.Engine.Gate; inj.Point == injAckHeld && (g == nil || g.ReleasedEpoch >= rep.Epoch) {
			t.Errorf("ack of epoch %d withheld from the engine, yet its gate says %+v", rep.Epoch, g)
		}
		if rep.Epoch <= rep.Armed {
			t.Errorf("injected at epoch %d, armed after checkpoint %d: not the epoch asked for", rep.Epoch, rep.Armed)
		}
	}
	primaryState := primaryNote(pst)
	var what string
	if inj.Point == injRandom {
		what = fmt.Sprintf("crashed at a random time [primary %s]", primaryState)
	} else {
		detail := ""
		if rep.Detail != "" {
			detail = " (" + rep.Detail + ")"
		}
		what = fmt.Sprintf("injected at epoch %d%s [armed after checkpoint %d; sent %d, in flight %d, acknowledged %d, released ≤ %d; primary %s], crash %s later",
			rep.Epoch, detail, rep.Armed, rep.SendDone, rep.InFlight, rep.AckSeen, rep.AckForwarded, primaryState,
			res.injectToCrash.Round(time.Millisecond))
	}
	t.Logf("%s: %s; restored epoch %d; detection %.1f ms, restore %.1f ms, total (last heard → reachable) %.1f ms, crash → reachable %s, last heard %s after the injection; clients: %d+%d rounds, first reply %s after reachable, longest reply %s",
		inj, what, R, f.DetectionMS, f.RestoreMS, f.TotalMS, res.crashToOpen.Round(time.Millisecond),
		f.LastHeard.Sub(rep.At).Round(time.Millisecond), clients[0].rounds(), clients[1].rounds(),
		res.firstReplyAfter.Round(time.Millisecond), max(clients[0].slowest(), clients[1].slowest()).Round(time.Millisecond))
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

// taggedWorkload is lab.RedisWorkload's check on a connection of its own
// keys: rounds of INCR <tag>:counter and SET <tag>:key:i <tag>:value:i.
type taggedWorkload struct {
	tag  string
	conn *lab.RedisConn

	mu      sync.Mutex
	incrs   []int64
	keys    []string
	replies []time.Time
	longest time.Duration
	err     error
}

func newTaggedWorkload(tag string, c net.Conn) *taggedWorkload {
	return &taggedWorkload{tag: tag, conn: lab.NewRedisConn(c)}
}

func (w *taggedWorkload) do(args ...string) (string, error) {
	start := time.Now()
	r, err := w.conn.Do(args...)
	if err == nil {
		w.mu.Lock()
		w.replies = append(w.replies, time.Now())
		w.longest = max(w.longest, time.Since(start))
		w.mu.Unlock()
	}
	return r, err
}

func (w *taggedWorkload) round(i int) error {
	r, err := w.do("INCR", w.tag+":counter")
	if err != nil {
		return fmt.Errorf("INCR #%d: %w", i, err)
	}
	v, err := strconv.ParseInt(strings.TrimPrefix(r, ":"), 10, 64)
	if err != nil {
		return fmt.Errorf("INCR #%d reply %q", i, r)
	}
	w.mu.Lock()
	w.incrs = append(w.incrs, v)
	w.mu.Unlock()
	k := fmt.Sprintf("%s:key:%d", w.tag, i)
	if r, err := w.do("SET", k, w.tag+":value:"+strconv.Itoa(i)); err != nil || r != "+OK" {
		return fmt.Errorf("SET %s: %q, %v", k, r, err)
	}
	w.mu.Lock()
	w.keys = append(w.keys, k)
	w.mu.Unlock()
	return nil
}

func (w *taggedWorkload) loop(stop <-chan struct{}) {
	for i := 1; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := w.round(i); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
	}
}

func (w *taggedWorkload) error() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *taggedWorkload) rounds() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.keys)
}

func (w *taggedWorkload) slowest() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.longest
}

func (w *taggedWorkload) repliesAfter(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.replies {
		if r.After(t) {
			n++
		}
	}
	return n
}

func (w *taggedWorkload) firstReplyAfter(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.replies {
		if r.After(t) {
			return r.Sub(t)
		}
	}
	return time.Hour
}

// verify (after loop ended): the counter's replies were 1, 2, 3, ... (none
// lost, none twice, never backwards), it reads back as the last one, and
// every acknowledged SET reads back.
func (w *taggedWorkload) verify() error {
	for i, v := range w.incrs {
		if v != int64(i+1) {
			return fmt.Errorf("INCR reply #%d is %d, want %d (replies %v): state went backwards or skipped", i+1, v, i+1, w.incrs[max(0, i-3):min(len(w.incrs), i+3)])
		}
	}
	if got, err := w.conn.Do("GET", w.tag+":counter"); err != nil || got != strconv.Itoa(len(w.incrs)) {
		return fmt.Errorf("GET %s:counter = %q, %v; want %d (acknowledged increments lost)", w.tag, got, err, len(w.incrs))
	}
	for i, k := range w.keys {
		want := w.tag + ":value:" + strconv.Itoa(i+1)
		got, err := w.conn.Do("GET", k)
		if err != nil {
			return fmt.Errorf("GET %s after failover: %w", k, err)
		}
		if got != want {
			return fmt.Errorf("GET %s after failover = %q, want %q (acknowledged write lost)", k, got, want)
		}
	}
	return nil
}
