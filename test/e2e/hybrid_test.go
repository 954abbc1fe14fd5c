// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// Hybrid mode through containerd, with four kinds of workload (ctr run
// --runtime io.rrc.v1 --annotation io.rrc.mode=hybrid): Redis, memcached,
// lighttpd and a deliberately nondeterministic server, each with several
// persistent client connections from the lab's client while host a
// crashes. At the failover b restores its last checkpoint and replays the
// log after it (docs/HYBRID.md): a connection whose replay contradicts what
// its client already has is reset, every other one carries on. Every
// client checks every byte it gets against what the server must have
// sent, so a reset is the only way a connection may end.

// The lab of these tests (docs/LAB.md: a name and subnet of their own).
const (
	hybridLab    = "rrchyb"
	hybridSubnet = "10.84.0"
)

// hybridCrashAfter is how long the clients run before a crashes: long
// enough for several checkpoints with the clients attached, so that the
// crash falls between two of them with a log behind the last one.
const hybridCrashAfter = time.Second

// hybridAfterUp is how long the clients go on once the service address is
// up on b: each surviving connection must have been served in it.
const hybridAfterUp = 2 * time.Second

// startHybridPair starts image replicated in hybrid mode from a to b and
// waits until ready (a probe of the service) succeeds on a fresh
// connection from the client; it returns the service's host:port.
func startHybridPair(ctx context.Context, t *testing.T, rl replicationLab, id, image string, port int, ready func(addr string) error) string {
	t.Helper()
	l := rl.l
	svc := l.ServiceIP(0)
	rl.startPair(ctx, t, pairSpec{id: id, image: image, serviceIP: svc, listen: l.IP("b") + ":7100",
		extra: []string{"--annotation", "io.rrc.mode=" + string(replication.ModeHybrid), "--annotation", "io.rrc.epoch=100ms"}})
	st := waitStatus(t, l, "a", id, "primary status", time.Second, func(status.Published) bool { return true })
	if st.Engine.Mode != replication.ModeHybrid || st.Engine.Log == nil {
		t.Fatalf("primary of %s is not in hybrid mode: mode %q, log %+v", id, st.Engine.Mode, st.Engine.Log)
	}
	addr := fmt.Sprintf("%s:%d", svc, port)
	if err := lab.WaitFor(20*time.Second, func() error { return ready(addr) }); err != nil {
		t.Fatalf("%s on %s: %v", image, addr, err)
	}
	return addr
}

// hybridConn is one client connection of these tests. step does one
// request and checks its reply against what the server must have sent: an
// error that is not a reset (isReset) is a wrong byte or a lost reply.
type hybridConn struct {
	name  string
	local string // the client's address:port, as the replay's log names it
	step  func() error

	mu      sync.Mutex
	replies []time.Time
	err     error // what ended run, nil if stopped
}

// dialHybrid opens a client connection to addr from the lab's client.
func dialHybrid(t *testing.T, l *lab.Lab, addr string) net.Conn {
	t.Helper()
	nc, err := lab.DialInNetnsTimeout(l.Netns("client"), addr, 10*time.Second)
	if err != nil {
		t.Fatalf("client connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// run does steps until stop is closed or one fails.
func (c *hybridConn) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		err := c.step()
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			return
		}
		c.replies = append(c.replies, time.Now())
		c.mu.Unlock()
	}
}

// count is the number of replies in (from, to].
func (c *hybridConn) count(from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.replies {
		if r.After(from) && !r.After(to) {
			n++
		}
	}
	return n
}

// isReset: err is how a reset connection ends for its client: a RST
// (ECONNRESET, or EPIPE writing after it) or an end of stream, possibly in
// the middle of a reply. Never a timeout: a connection that hangs is lost.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// hybridRun is what a failover under the clients did.
type hybridRun struct {
	crashAt, up time.Time
	f           replication.FailoverTimings
	replay      replication.ReplayFigures
	logged      map[string]string // client address:port → why b's log says it reset it
	reset       []*hybridConn     // connections whose client saw a reset
	survived    []*hybridConn
}

// failOverHybrid runs conns, crashes a after hybridCrashAfter, waits for
// b's promotion, lets the clients go on for hybridAfterUp after the
// service address came up and stops them. It checks what holds for every
// workload: a connection ends only by a reset, never by a wrong byte or a
// timeout; the connections whose clients saw a reset are exactly those b's
// log names, as many as the replay's report says; every other connection
// was served after the failover. It logs the failover's figures.
func failOverHybrid(t *testing.T, l *lab.Lab, id, workload string, conns []*hybridConn) hybridRun {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var r hybridRun
	r.crashAt = crashDuring(t, l, "a", hybridCrashAfter, func() {
		for _, c := range conns {
			wg.Add(1)
			go func() { defer wg.Done(); c.run(stop) }()
		}
	})
	after := waitPromoted(t, l, id)
	if after.Engine.Failover == nil || after.Engine.Failover.Replay == nil {
		close(stop)
		wg.Wait()
		t.Fatalf("b's promotion of %s reports no replay (not a hybrid failover?): %+v", id, after.Engine.Failover)
	}
	r.f, r.replay = *after.Engine.Failover, *after.Engine.Failover.Replay
	r.up = r.f.LastHeard.Add(time.Duration(r.f.TotalMS * float64(time.Millisecond)))
	time.Sleep(time.Until(r.up.Add(hybridAfterUp)))
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: a client's request got no reply 20 s after the clients were stopped", workload)
	}

	rp, f := r.replay, r.f
	t.Logf("%s: failover from epoch %d: detection %.1f ms, restore %.1f ms, replay %.1f ms, network %.1f ms, total (last heard → reachable) %.1f ms",
		workload, f.Epoch, f.DetectionMS, f.RestoreMS, f.ReplayMS, f.NetworkMS, f.TotalMS)
	t.Logf("%s: replay: %d records after the checkpoint, %d inputs fed, %d outputs judged, %d waits, %d diverged, %d pending, %d accepted after the checkpoint, %d reset",
		workload, rp.Records, rp.Inputs, rp.Outputs, rp.Waits, rp.Diverged, rp.Pending, rp.Accepted, rp.Reset)
	if rp.Records == 0 || rp.Inputs == 0 {
		t.Errorf("%s: the replay had nothing to replay (%d records, %d inputs): the crash did not fall under busy clients", workload, rp.Records, rp.Inputs)
	}

	r.logged = replayResets(t, l, l.IP("client"))
	for _, c := range conns {
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		before, afterUp := c.count(time.Time{}, r.crashAt), c.count(r.up, time.Now())
		switch {
		case err == nil:
			r.survived = append(r.survived, c)
			t.Logf("%s: connection %s (%s): %d replies before the crash, %d after the address came up; carried on", workload, c.name, c.local, before, afterUp)
		case isReset(err):
			r.reset = append(r.reset, c)
			t.Logf("%s: connection %s (%s): %d replies before the crash; reset (%v); b's log: %q", workload, c.name, c.local, before, err, r.logged[c.local])
		default:
			t.Errorf("%s: connection %s (%s): %v (a connection may end only by a reset)", workload, c.name, c.local, err)
		}
		if err == nil && afterUp == 0 {
			t.Errorf("%s: connection %s carried on but was not served after the failover", workload, c.name)
		}
		if _, named := r.logged[c.local]; named != (err != nil && isReset(err)) {
			t.Errorf("%s: connection %s (%s): client saw a reset: %v, b's log names it reset: %v", workload, c.name, c.local, err != nil && isReset(err), named)
		}
	}
	if len(r.logged) != rp.Reset {
		t.Errorf("%s: b's log names %d connections of the client reset (%v), the replay's report %d", workload, len(r.logged), r.logged, rp.Reset)
	}
	if rp.Reset != rp.Diverged+rp.Pending+rp.Accepted {
		t.Errorf("%s: %d reset, but %d diverged + %d pending + %d accepted", workload, rp.Reset, rp.Diverged, rp.Pending, rp.Accepted)
	}
	return r
}

// resetLine is a line of the shim's log naming a connection the replay
// reset (replication/promote.go), with the container's and the client's
// addresses.
var resetLine = regexp.MustCompile(`msg="([^"]*(?:connection reset|accepted after the checkpoint)[^"]*)".*conn="\d+ ([0-9.]+:\d+)(?:→|\\u2192)([0-9.]+:\d+)"`)

// replayResets reads b's containerd log: the connections of client address
// ip that the replay reset, with the reason.
func replayResets(t *testing.T, l *lab.Lab, ip string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(l.Log("b"))
	if err != nil {
		t.Fatalf("b's containerd log: %v", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := resetLine.FindStringSubmatch(line); m != nil && strings.HasPrefix(m[3], ip+":") {
			out[m[3]] = m[1]
		}
	}
	return out
}

// endHybrid deletes the promoted container on b and checks nothing of it
// is left (a is crashed; the lab's down removes what is left of it).
func endHybrid(ctx context.Context, t *testing.T, l *lab.Lab, id string) {
	t.Helper()
	b := host{t: t, lab: l, name: "b"}
	b.killAndDelete(ctx, id, "KILL")
	nothingLeft(t, l, "b", id)
}

// TestHybridRedis: four connections of INCR and SET on keys of their own
// to a replicated Redis in hybrid mode while a crashes. Redis is
// single-threaded and its replies depend on its inputs only: the replay
// must reproduce every reply, so no connection is reset or reconnects,
// every INCR goes up by one, every acknowledged SET reads back on the
// connection that made it, and the replay's report resets nothing.
func TestHybridRedis(t *testing.T) {
	rl := startReplicationLab(t, hybridLab, hybridSubnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "hredis"
	addr := startHybridPair(ctx, t, rl, id, redis, 6379, func(addr string) error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if r, err := lab.NewRedisConn(c).Do("PING"); err != nil || r != "+PONG" {
			return fmt.Errorf("PING: %q, %v", r, err)
		}
		return nil
	})

	var conns []*hybridConn
	var ws []*lab.RedisWorkload
	for i := range 4 {
		nc := dialHybrid(t, l, addr)
		w := lab.NewRedisWorkload(nc)
		w.Prefix, w.Fresh = fmt.Sprintf("c%d:", i), true
		ws = append(ws, w)
		conns = append(conns, &hybridConn{name: strconv.Itoa(i), local: nc.LocalAddr().String(),
			step: func() error { return w.Run(ctx, 1) }})
	}
	r := failOverHybrid(t, l, id, "redis", conns)
	// The backup wrote CRIU's kernel-feature cache when it started, and the
	// restore used it (docs/CHECKPOINT.md, "The restore's kernel probing").
	if log, err := os.ReadFile(l.Log("b")); err != nil || !regexp.MustCompile(`msg="restored through the runc task service[^"]*".*kernel_cache=true`).Match(log) {
		t.Errorf("b's containerd log has no restore that used CRIU's kernel-feature cache (read: %v)", err)
	}
	if len(r.reset) != 0 || r.replay.Reset != 0 {
		t.Errorf("redis: the replay reset %d connections (%d diverged, %d pending, %d accepted); the clients saw %d resets: a deterministic server's connections must all carry on",
			r.replay.Reset, r.replay.Diverged, r.replay.Pending, r.replay.Accepted, len(r.reset))
	}
	for i, w := range ws {
		if err := w.Verify(); err != nil {
			t.Errorf("redis: connection %d after the failover: %v", i, err)
		}
		t.Logf("redis: connection %d: %d INCRs, %d SETs read back", i, len(w.Incrs), len(w.Keys))
	}
	endHybrid(ctx, t, l, id)
}

// memcacheClient is one connection of TestHybridMemcached: each round
// increments a counter of its own (c<i>, from 0), reads the key all
// connections share and nobody writes during the run ("motd"), sets a key
// of its own and reads it back; a sharing client also increments the
// counter the sharing clients have in common ("shared").
type memcacheClient struct {
	i       int
	sharing bool
	m       *lab.MemcacheConn
	n       uint64            // rounds done: c<i>'s acknowledged value
	shared  []uint64          // its increments of "shared", as acknowledged
	keys    map[string]string // acknowledged sets
}

// memcacheMOTD is the value of the shared read-only key.
const memcacheMOTD = "the same for every connection"

func (c *memcacheClient) round() error {
	own := fmt.Sprintf("c%d", c.i)
	v, err := c.m.Incr(own, 1)
	if err != nil {
		return err
	}
	if v != c.n+1 {
		return fmt.Errorf("incr %s: %d after %d: the counter went backwards or skipped", own, v, c.n)
	}
	c.n = v
	if got, err := c.m.Get("motd"); err != nil {
		return err
	} else if got != memcacheMOTD {
		return fmt.Errorf("get motd: %q, want %q", got, memcacheMOTD)
	}
	var s uint64
	if c.sharing {
		if s, err = c.m.Incr("shared", 1); err != nil {
			return err
		}
		if k := len(c.shared); k > 0 && s <= c.shared[k-1] {
			return fmt.Errorf("incr shared: %d after %d on the same connection", s, c.shared[k-1])
		}
		c.shared = append(c.shared, s)
	}
	key, val := fmt.Sprintf("k%d:%d", c.i, c.n), fmt.Sprintf("v%d:%d:%d", c.i, c.n, s)
	if err := c.m.Set(key, val); err != nil {
		return err
	}
	c.keys[key] = val
	if got, err := c.m.Get(key); err != nil {
		return err
	} else if got != val {
		return fmt.Errorf("get %s: %q right after set %q", key, got, val)
	}
	return nil
}

// TestHybridMemcached: six connections to a replicated memcached (four
// worker threads) in hybrid mode while a crashes, each with a counter of
// its own, keys it sets and reads back and a shared key it reads; three of
// them also increment a counter they share. Every reply a client got must
// be right (its counter 1, 2, 3, …, the shared counter's increments
// distinct and rising per connection); connections end only by a reset,
// each one named by b and counted by the replay; afterwards, on a fresh
// connection, every acknowledged write reads back. The connections that
// share nothing written must carry on: their replies depend on their own
// requests only, whichever threads serve them. The shared counter makes a
// reply depend on how memcached's threads interleave two connections'
// requests, which the replay cannot enforce when both were in before either
// answer: such a connection may diverge and be reset (logged, not an
// error).
func TestHybridMemcached(t *testing.T) {
	rl := startReplicationLab(t, hybridLab, hybridSubnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "hmemc"
	addr := startHybridPair(ctx, t, rl, id, lab.MemcachedImage, 11211, func(addr string) error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		return lab.NewMemcacheConn(c).Set("ready", "1")
	})

	const n = 6
	var conns []*hybridConn
	var cls []*memcacheClient
	for i := range n {
		nc := dialHybrid(t, l, addr)
		c := &memcacheClient{i: i, sharing: i >= n/2, m: lab.NewMemcacheConn(nc), keys: map[string]string{}}
		if err := c.m.Set(fmt.Sprintf("c%d", i), "0"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := errors.Join(c.m.Set("shared", "0"), c.m.Set("motd", memcacheMOTD)); err != nil {
				t.Fatal(err)
			}
		}
		cls = append(cls, c)
		conns = append(conns, &hybridConn{name: strconv.Itoa(i), local: nc.LocalAddr().String(), step: c.round})
	}
	r := failOverHybrid(t, l, id, "memcached", conns)
	for _, h := range r.reset {
		if i, _ := strconv.Atoi(h.name); !cls[i].sharing {
			t.Errorf("memcached: connection %s, which shares nothing written, was reset (%q)", h.name, r.logged[h.local])
		}
	}

	// Every increment of the shared counter a client saw is distinct.
	var all []uint64
	for _, c := range cls {
		all = append(all, c.shared...)
	}
	slices.Sort(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Errorf("memcached: two connections got %d from incr shared", all[i])
		}
	}
	// What was acknowledged is there, on a connection opened now. A
	// reset connection may have had one request in flight, which the
	// replay may have fed: its counter may be one more.
	m := lab.NewMemcacheConn(dialHybrid(t, l, addr))
	for _, c := range cls {
		reset := slices.ContainsFunc(r.reset, func(h *hybridConn) bool { return h.name == strconv.Itoa(c.i) })
		got, err := m.Get(fmt.Sprintf("c%d", c.i))
		v, perr := strconv.ParseUint(got, 10, 64)
		switch {
		case err != nil || perr != nil:
			t.Errorf("memcached: get c%d after the failover: %q, %v", c.i, got, errors.Join(err, perr))
		case v != c.n && !(reset && v == c.n+1):
			t.Errorf("memcached: c%d is %d after the failover, its client's last acknowledged incr %d (connection reset: %v)", c.i, v, c.n, reset)
		}
		for k, want := range c.keys {
			if got, err := m.Get(k); err != nil || got != want {
				t.Errorf("memcached: get %s after the failover: %q, %v; acknowledged %q", k, got, err, want)
			}
		}
		t.Logf("memcached: connection %d (sharing a counter: %v): %d rounds, %d keys read back", c.i, c.sharing, c.n, len(c.keys))
	}
	if got, err := m.Get("shared"); err != nil {
		t.Errorf("memcached: get shared after the failover: %v", err)
	} else if v, _ := strconv.ParseUint(got, 10, 64); len(all) > 0 && (v < all[len(all)-1] || v > all[len(all)-1]+n) {
		t.Errorf("memcached: shared is %s after the failover; the highest increment acknowledged %d, at most %d in flight", got, all[len(all)-1], n)
	}
	t.Logf("memcached: %d of %d connections carried on, %d reset (replay: %d diverged, %d pending)", len(r.survived), n, len(r.reset), r.replay.Diverged, r.replay.Pending)
	endHybrid(ctx, t, l, id)
}

// TestHybridLighttpd: eight keep-alive connections fetching the lab's
// files from a replicated lighttpd in hybrid mode while a crashes, every
// byte of every response checked (lab.HTTPConn.Get). lighttpd puts the
// time in each response (Date:), so a response the replay produces again
// a second later differs from the logged one wherever it was logged after
// the checkpoint: those connections are reset, each named by b and counted
// by the replay, and their clients never see a wrong byte; the others carry
// on. Afterwards the service answers on new connections.
func TestHybridLighttpd(t *testing.T) {
	rl := startReplicationLab(t, hybridLab, hybridSubnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "hweb"
	addr := startHybridPair(ctx, t, rl, id, lab.LighttpdImage, 80, func(addr string) error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		return lab.NewHTTPConn(c).Get("f01", 5*time.Second)
	})

	files := lab.WWWFiles()
	var conns []*hybridConn
	for i := range 8 {
		nc := dialHybrid(t, l, addr)
		h := lab.NewHTTPConn(nc)
		k := i
		conns = append(conns, &hybridConn{name: strconv.Itoa(i), local: nc.LocalAddr().String(), step: func() error {
			k++
			return h.Get(files[k%len(files)], 15*time.Second)
		}})
	}
	r := failOverHybrid(t, l, id, "lighttpd", conns)
	for _, f := range []string{"f01", "f20"} {
		c := dialHybrid(t, l, addr)
		if err := lab.NewHTTPConn(c).Get(f, 10*time.Second); err != nil {
			t.Errorf("lighttpd: a new connection after the failover: %v", err)
		}
	}
	t.Logf("lighttpd: %d of %d connections carried on, %d reset (replay: %d diverged, %d pending)", len(r.survived), len(conns), len(r.reset), r.replay.Diverged, r.replay.Pending)
	endHybrid(ctx, t, l, id)
}

// nondetClient is one connection of TestHybridNondet. Every round sends
// INCR and ECHO, whose replies are the same in every run; a mixed client
// also sends TIME and RAND, whose replies are not. Each reply is checked
// against what the server may have sent: COUNT 1, 2, 3, …; the ECHO of
// what was sent; a TIME between the request and the reply, never going
// back; RAND with the requested number of hex bytes.
type nondetClient struct {
	name  string
	mixed bool
	c     net.Conn
	r     *bufio.Reader
	n     uint64
	last  int64 // last TIME
}

func (c *nondetClient) do(req string) (string, time.Time, error) {
	sent := time.Now()
	if err := c.c.SetDeadline(sent.Add(15 * time.Second)); err != nil {
		return "", sent, err
	}
	if _, err := io.WriteString(c.c, req+"\n"); err != nil {
		return "", sent, fmt.Errorf("%s: %w", req, err)
	}
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", sent, fmt.Errorf("%s: %w (after %q)", req, err, l)
	}
	return strings.TrimSuffix(l, "\n"), sent, nil
}

func (c *nondetClient) round() error {
	l, _, err := c.do("INCR")
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("COUNT %d", c.n+1); l != want {
		return fmt.Errorf("INCR: %q, want %q", l, want)
	}
	c.n++
	if c.mixed {
		l, sent, err := c.do("TIME")
		if err != nil {
			return err
		}
		got := time.Now()
		ns, perr := strconv.ParseInt(strings.TrimPrefix(l, "TIME "), 10, 64)
		if !strings.HasPrefix(l, "TIME ") || perr != nil || ns < sent.UnixNano() || ns > got.UnixNano() || ns < c.last {
			return fmt.Errorf("TIME: %q, want a time between the request (%d) and the reply (%d), not before the last one (%d)", l, sent.UnixNano(), got.UnixNano(), c.last)
		}
		c.last = ns
	}
	echo := fmt.Sprintf("%s-%d", c.name, c.n)
	if l, _, err = c.do("ECHO " + echo); err != nil {
		return err
	}
	if l != "ECHO "+echo {
		return fmt.Errorf("ECHO %s: %q", echo, l)
	}
	if c.mixed {
		if l, _, err = c.do("RAND 16"); err != nil {
			return err
		}
		h, ok := strings.CutPrefix(l, "RAND ")
		if !ok || len(h) != 32 || strings.Trim(h, "0123456789abcdef") != "" {
			return fmt.Errorf("RAND 16: %q, want 32 hex digits", l)
		}
	}
	return nil
}

// TestHybridNondet: six connections to contrib/workloads/nondet in hybrid
// mode while a crashes; three send deterministic commands only (INCR,
// ECHO), three mix in TIME and RAND, continuously, so that the log after
// the checkpoint holds some of their nondeterministic replies. The replay
// regenerates those differently: the mixed connections must be reset
// (their clients see the reset and never a wrong byte), counted as
// diverged; the deterministic ones must carry on without reconnecting.
func TestHybridNondet(t *testing.T) {
	rl := startReplicationLab(t, hybridLab, hybridSubnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "hnondet"
	addr := startHybridPair(ctx, t, rl, id, lab.NondetImage, 7000, func(addr string) error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		cl := &nondetClient{name: "probe", c: c, r: bufio.NewReader(c)}
		return cl.round()
	})

	var conns []*hybridConn
	var cls []*nondetClient
	for i := range 6 {
		nc := dialHybrid(t, l, addr)
		c := &nondetClient{name: fmt.Sprintf("det%d", i), mixed: i%2 == 1, c: nc, r: bufio.NewReader(nc)}
		if c.mixed {
			c.name = fmt.Sprintf("mixed%d", i)
		}
		cls = append(cls, c)
		conns = append(conns, &hybridConn{name: c.name, local: nc.LocalAddr().String(), step: c.round})
	}
	r := failOverHybrid(t, l, id, "nondet", conns)
	mixedReset := 0
	for _, h := range r.reset {
		if strings.HasPrefix(h.name, "det") {
			t.Errorf("nondet: deterministic connection %s was reset", h.name)
		} else {
			mixedReset++
		}
	}
	for _, h := range r.survived {
		if strings.HasPrefix(h.name, "mixed") {
			t.Errorf("nondet: mixed connection %s carried on: its nondeterministic replies logged after the checkpoint should have diverged in the replay", h.name)
		}
	}
	if r.replay.Diverged != mixedReset || r.replay.Reset != mixedReset {
		t.Errorf("nondet: the replay reports %d diverged and %d reset; the clients saw %d mixed connections reset", r.replay.Diverged, r.replay.Reset, mixedReset)
	}
	for _, c := range cls {
		t.Logf("nondet: connection %s: %d rounds", c.name, c.n)
	}
	// The server answers a new connection with a counter of its own.
	nc := dialHybrid(t, l, addr)
	fresh := &nondetClient{name: "fresh", mixed: true, c: nc, r: bufio.NewReader(nc)}
	for range 3 {
		if err := fresh.round(); err != nil {
			t.Errorf("nondet: a new connection after the failover: %v", err)
			break
		}
	}
	endHybrid(ctx, t, l, id)
}
