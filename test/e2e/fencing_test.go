// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// TestFencedFailoverThroughContainerd: Redis replicated from a to b through
// containerd, both hosts' shim configuration naming the lab's etcd
// ([witness]). rrcctl says the pair is fenced; a is cut from everything
// while a client keeps its connection busy; b promotes once a's lease has
// expired, the connection carries on with nothing acknowledged lost, and
// the failover reports its fence step; healed, a's shim says superseded
// and its output stays held (docs/FENCING.md).
func TestFencedFailoverThroughContainerd(t *testing.T) {
	prereq.Path(t, "/opt/rrc/etcd/bin/etcd", "etcd (contrib/setup/etcd.sh)")
	prereq.Commands(t, "ebtables")
	l0 := lab.New("rrcfenc2", "10.106.0")
	l0.Witness = true
	rl := startReplicationLabWith(t, l0)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const id = "f1"
	serviceIP := l.Subnet + ".200"
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: serviceIP, listen: l.IP("b") + ":7100"})
	for _, h := range []string{"a", "b"} {
		if out := rrcctl(t, l, rl.bin, rl.dir, h); !strings.Contains(out, "fenced by etcd") {
			t.Errorf("rrcctl status on %s does not say the pair is fenced:\n%s", h, out)
		}
	}
	cl := redisClient(ctx, t, l, serviceIP+":6379", 25)

	var isolated time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(150 * time.Millisecond)
		isolated = time.Now()
		if err := l.Isolate(context.Background(), "a"); err != nil {
			t.Errorf("isolate a: %v", err)
		}
	}()
	if err := cl.Run(ctx, 25); err != nil {
		t.Fatalf("across the failover (the connection must survive): %v", err)
	}
	<-done
	after := waitStatus(t, l, "b", id, "promotion", 30*time.Second, isState(replication.StatePrimaryAfterFailover))
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	f := after.Engine.Failover
	if f == nil || f.FenceMS <= 0 {
		t.Fatalf("failover without its fence step: %+v", f)
	}
	t.Logf("fenced failover: restored epoch %d; detection %.1f ms, fence %.1f ms, restore %.1f ms, network %.1f ms, total %.1f ms; first reply %s after the isolation",
		f.Epoch, f.DetectionMS, f.FenceMS, f.RestoreMS, f.NetworkMS, f.TotalMS, cl.FirstReplyAfter(isolated).Round(time.Millisecond))
	if out := rrcctl(t, l, rl.bin, rl.dir, "b"); !strings.Contains(out, "fence ") || !strings.Contains(out, "fenced by etcd (lease") {
		t.Errorf("rrcctl status on b after the failover:\n%s", out)
	}

	before := waitStatus(t, l, "a", id, "the isolated primary's status", 5*time.Second, func(status.Published) bool { return true })
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	old := waitStatus(t, l, "a", id, "old primary superseded", 15*time.Second, isState(replication.StateSuperseded))
	time.Sleep(time.Second)
	last := waitStatus(t, l, "a", id, "the old primary's status", 5*time.Second, func(status.Published) bool { return true })
	if g0, g1 := before.Engine.Gate, last.Engine.Gate; g0 == nil || g1 == nil || g1.Released != g0.Released {
		t.Errorf("the superseded primary released output after the heal: gate before %+v, after %+v", g0, g1)
	}
	if out := rrcctl(t, l, rl.bin, rl.dir, "a"); !strings.Contains(out, "superseded") || !strings.Contains(out, "the other side owns the pair") {
		t.Errorf("rrcctl status on a after the heal:\n%s", out)
	}
	t.Logf("old primary: %s (%s)", old.Engine.State, old.Engine.Reason)
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the heal, on b: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	// Deleting both sides leaves nothing (the lease on b is revoked).
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	a.killAndDelete(ctx, id, "KILL")
	b.killAndDelete(ctx, id, "KILL")
	nothingLeft(t, l, "a", id)
	nothingLeft(t, l, "b", id)
}
