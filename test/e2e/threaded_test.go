// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

const threadkv = lab.ThreadKVImage

// TestThreadedReplicationThroughContainerd: a multi-threaded server
// (contrib/workloads/threadkv: GOMAXPROCS 4, a goroutine per connection,
// background workers locked to threads of their own) replicated from a to
// b through containerd; several client connections run the Redis workload
// at once while a crashes; each connection continues on the restored
// process without reconnecting, and every reply it got stays true.
func TestThreadedReplicationThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t, "rrcmt", "10.90.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	const id, conns = "t1", 4
	serviceIP := l.ServiceIP(0)
	rl.startPair(ctx, t, pairSpec{id: id, image: threadkv, serviceIP: serviceIP, listen: l.IP("b") + ":7100"})

	pid := taskPid(t, a.must(ctx, "task", "ls"), id)
	n, states := threads(t, pid)
	t.Logf("primary's process %d on a: %d threads (%s)", pid, n, states)
	if n < 4 {
		t.Fatalf("threadkv on a has %d threads, want at least 4", n)
	}

	workloads := make([]*lab.RedisWorkload, conns)
	for i := range workloads {
		nc, err := lab.DialInNetns(l.Netns("client"), serviceIP+":6379")
		if err != nil {
			t.Fatalf("client %d connect: %v", i, err)
		}
		defer nc.Close()
		workloads[i] = lab.NewRedisWorkload(nc)
		workloads[i].Prefix = fmt.Sprintf("c%d:", i)
	}
	// run drives every connection at once and returns the first error.
	run := func(what string, rounds int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, conns)
		for i, w := range workloads {
			wg.Go(func() { errs[i] = w.Run(ctx, rounds) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("connection %d %s: %v", i, what, err)
			}
		}
	}
	run("before the crash", 15)
	crashAt := crashDuring(t, l, "a", 150*time.Millisecond, func() {
		run("across the failover (the connection must survive)", 25)
	})
	after := waitPromoted(t, l, id)
	run("after the failover", 10)
	for i, w := range workloads {
		if err := w.Verify(); err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
		if w.FirstReplyAfter(crashAt) == 0 {
			t.Errorf("connection %d: no reply after the crash", i)
		}
		t.Logf("connection %d: %d INCRs (up to %d), %d keys, first reply %s after the crash, slowest %s", i, len(w.Incrs),
			w.Incrs[len(w.Incrs)-1], len(w.Keys), w.FirstReplyAfter(crashAt).Round(time.Millisecond), w.Slowest.Round(time.Millisecond))
	}
	f := after.Engine.Failover
	t.Logf("failover: restored epoch %d; detection %.1f ms, restore %.1f ms, network %.1f ms, total %.1f ms",
		f.Epoch, f.DetectionMS, f.RestoreMS, f.NetworkMS, f.TotalMS)

	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	if out := b.must(ctx, "task", "ls"); !taskLine(out, id, rc.Pid, "RUNNING") {
		t.Errorf("ctr task ls on b does not show the restored pid %d RUNNING:\n%s", rc.Pid, out)
	}
	n, states = threads(t, rc.Pid)
	t.Logf("restored process %d on b: %d threads (%s)", rc.Pid, n, states)
	if n < 4 {
		t.Errorf("restored threadkv on b has %d threads, want at least 4", n)
	}
	if out := rrcctl(t, l, rl.bin, rl.dir, "b"); !rrcctlSays(out, id, "primary-after-failover") {
		t.Errorf("rrcctl status on b after the failover:\n%s", out)
	}

	// threadkv exits 0 on TERM: the signal reaches the restored process
	// (its handler goroutine and all), and its exit status comes back.
	if code := b.killAndDelete(ctx, id, "TERM"); code != 0 {
		t.Errorf("exit status of the restored threadkv after TERM: %d, want 0", code)
	}
	nothingLeft(t, l, "b", id)
}

// taskPid is the PID column of `ctr task ls` for id.
func taskPid(t *testing.T, out, id string) int {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		var pid int
		if len(f) >= 3 && f[0] == id {
			if _, err := fmt.Sscan(f[1], &pid); err == nil && pid > 0 {
				return pid
			}
		}
	}
	t.Fatalf("no pid of %s in ctr task ls:\n%s", id, out)
	return 0
}

// threads counts the threads of pid in /proc and summarises their states
// (R running, S sleeping, ...).
func threads(t *testing.T, pid int) (int, string) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	count := map[string]int{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			count[s[i+2:i+3]]++
		}
	}
	var parts []string
	for st, n := range count {
		parts = append(parts, fmt.Sprintf("%s:%d", st, n))
	}
	sort.Strings(parts)
	return len(ents), strings.Join(parts, " ")
}
