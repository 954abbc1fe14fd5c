// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// The lab of TestContainerdRestart (docs/LAB.md: a name and subnet of its own).
const (
	restartLab    = "rrcrst"
	restartSubnet = "10.97.0"
)

// TestContainerdRestart: restarting containerd (lab.sh restart-containerd:
// SIGTERM, wait, start again with the same config) on the primary's host,
// then on the backup's, leaves the replicated pair running and in sync
// under a busy client: the same shims go on, every reply is right, the
// committed epoch keeps advancing, and each restarted daemon lists the task
// RUNNING. Then a's host crashes and b, whose containerd was restarted,
// takes over with every acknowledged write, is listed and deleted through
// that containerd, and its shim's events reach it. In epoch mode and in
// hybrid mode.
func TestContainerdRestart(t *testing.T) {
	for _, mode := range []replication.Mode{replication.ModeEpoch, replication.ModeHybrid} {
		t.Run(string(mode), func(t *testing.T) { testContainerdRestart(t, mode) })
	}
}

func testContainerdRestart(t *testing.T, mode replication.Mode) {
	rl := startReplicationLab(t, restartLab, restartSubnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	const id = "crst"
	svc := l.ServiceIP(0)
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: svc, listen: l.IP("b") + ":7100",
		extra: []string{"--annotation", "io.rrc.mode=" + string(mode), "--annotation", "io.rrc.epoch=100ms"}})
	if st := waitStatus(t, l, "a", id, "primary status", time.Second, func(status.Published) bool { return true }); st.Engine.Mode != mode {
		t.Fatalf("primary runs in mode %q, want %q", st.Engine.Mode, mode)
	}

	var nc net.Conn
	if err := lab.WaitFor(20*time.Second, func() error {
		c, err := lab.DialInNetnsTimeout(l.Netns("client"), svc+":6379", time.Second)
		if err != nil {
			return err
		}
		if r, err := lab.NewRedisConn(c).Do("PING"); err != nil || r != "+PONG" {
			c.Close()
			return fmt.Errorf("PING: %q, %v", r, err)
		}
		nc = c
		return nil
	}); err != nil {
		t.Fatalf("redis on %s: %v", svc, err)
	}
	defer nc.Close()
	// The PING's connection carries the workload: its INCRs count from 1.
	cl := lab.NewRedisWorkload(nc)
	cl.Fresh = true
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("in sync: %v", err)
	}

	// What must not change across the restarts: the shims (containerd
	// reconnects to them, it does not start new ones) and the tasks' pids.
	shims := map[string]int{}
	pids := map[string]int{}
	for _, h := range []host{a, b} {
		shims[h.name] = findShim(l.Namespace(h.name), id)
		if shims[h.name] == 0 {
			t.Fatalf("no shim of %s on %s", id, h.name)
		}
		pids[h.name] = taskPid(t, h.must(ctx, "task", "ls"), id)
	}

	// The client keeps its connection busy throughout.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); cl.RunUntil(stop) }()
	stopped := false
	stopClient := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer stopClient()

	for _, h := range []host{a, b} {
		before := waitStatus(t, l, "b", id, "backup in sync", 5*time.Second, isState(replication.StateInSync)).Engine.CommittedEpoch
		restartAt := time.Now()
		if err := l.RestartContainerd(ctx, h.name); err != nil {
			t.Fatalf("restart containerd of %s: %v", h.name, err)
		}
		t.Logf("containerd of %s restarted in %s, committed epoch %d before", h.name, time.Since(restartAt).Round(time.Millisecond), before)

		// The restarted daemon sees the tasks as before, through the same shims.
		for _, o := range []host{a, b} {
			out := o.must(ctx, "task", "ls")
			if !taskLine(out, id, pids[o.name], "RUNNING") {
				t.Errorf("after containerd of %s restarted: ctr task ls on %s does not show %s pid %d RUNNING:\n%s", h.name, o.name, id, pids[o.name], out)
			}
			if pid := findShim(l.Namespace(o.name), id); pid != shims[o.name] {
				t.Errorf("after containerd of %s restarted: the shim of %s on %s is pid %d, was %d", h.name, id, o.name, pid, shims[o.name])
			}
		}
		// Both sides in sync, the committed epoch advancing, the status
		// files written by the same shims.
		for _, o := range []string{"a", "b"} {
			st := waitStatus(t, l, o, id, fmt.Sprintf("in sync past epoch %d after containerd of %s restarted", before, h.name), 15*time.Second, func(s status.Published) bool {
				return s.Engine.State == replication.StateInSync && s.Engine.CommittedEpoch > before+2 && s.UpdatedAt.After(restartAt)
			})
			if st.ShimPid != shims[o] {
				t.Errorf("status of %s on %s written by pid %d, the shim is %d", id, o, st.ShimPid, shims[o])
			}
			out := rrcctl(t, l, rl.bin, rl.dir, o)
			if !rrcctlSays(out, id, "in-sync") || !rrcctlSays(out, id, "running") {
				t.Errorf("after containerd of %s restarted: rrcctl status on %s does not say %s is running and in-sync:\n%s", h.name, o, id, out)
			}
		}
		// The client goes on: replies keep coming on its connection (at
		// 100 ms epochs on a loaded machine, a few a second).
		if err := lab.WaitFor(10*time.Second, func() error {
			if err := cl.Err(); err != nil {
				return err
			}
			if n := cl.RepliesAfter(restartAt); n < 20 {
				return fmt.Errorf("only %d replies since the restart", n)
			}
			return nil
		}); err != nil {
			t.Fatalf("the client's connection across the restart of containerd on %s: %v", h.name, err)
		}
	}
	stopClient()
	if err := cl.Err(); err != nil {
		t.Fatalf("the client's connection: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatalf("before the failover: %v", err)
	}
	t.Logf("%d INCRs across both restarts, mean/p99 latency %v", len(cl.Incrs), fmtLatency(cl))

	// b's shim was reconnected to a new containerd: its promotion, task
	// calls and events must go through that one.
	events := watchEvents(ctx, t, l, "b")
	after, crashAt := failOver(ctx, t, l, id, cl)
	f := after.Engine.Failover
	t.Logf("failover after both restarts: restored epoch %d, total %.1f ms, first reply %s after the crash; %d INCRs on one connection",
		f.Epoch, f.TotalMS, cl.FirstReplyAfter(crashAt).Round(time.Millisecond), len(cl.Incrs))
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in b's status: %+v", after.Engine)
	}
	if out := b.must(ctx, "task", "ls"); !taskLine(out, id, rc.Pid, "RUNNING") {
		t.Errorf("ctr task ls on b does not show the restored pid %d RUNNING:\n%s", rc.Pid, out)
	}
	if code := b.killAndDelete(ctx, id, "KILL"); code != 128+9 {
		t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
	}
	// The TaskExit of the restored container (the runc service's) and the
	// TaskDelete, published by b's shim to the restarted containerd; the
	// restore's own create and start are not published (REPLICATED-TASKS.md).
	want := []string{"/tasks/exit", "/tasks/delete"}
	if err := lab.WaitFor(10*time.Second, func() error {
		if got := events.of(id); !slices.Equal(got, want) {
			return fmt.Errorf("ctr events on b shows %v of %s, want %v", got, id, want)
		}
		return nil
	}); err != nil {
		t.Errorf("the shim's events after containerd restarted: %v", err)
	}
	nothingLeft(t, l, "b", id)

	// Host a again: its containerd finds the crashed primary's container
	// without a task; deleting it through containerd leaves nothing.
	if err := l.Restart(ctx, "a"); err != nil {
		t.Fatalf("restart a: %v", err)
	}
	a.cleanup(id)
	if out := a.must(ctx, "container", "ls", "-q"); strings.Contains(out, id) {
		t.Errorf("container %s still listed on a after delete:\n%s", id, out)
	}
	nothingLeft(t, l, "a", id)
}

func fmtLatency(cl *lab.RedisWorkload) string {
	mean, p99 := cl.Latency()
	return fmt.Sprintf("%s/%s", mean.Round(time.Microsecond), p99.Round(time.Microsecond))
}
