// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// etcdBin is where contrib/setup/etcd.sh unpacks etcd, which the lab's
// witness runs.
const etcdBin = "/opt/rrc/etcd/bin/etcd"

// fenceTTL is the pairs' lease in the fenced lab tests: etcd's least with
// the lab's raft timing, so that the fence adds as little as it can to a
// failover.
const fenceTTL = time.Second

// TestFencedPartitionLab replicates Redis from a to b fenced by the lab's
// three-member etcd (a member on a, b and w), with a client on the client
// host, and partitions the lab:
//
//  1. the link between a and b only (both reach the witness): the primary
//     keeps its lease and serves, degraded; the backup declares it failed
//     but cannot own the pair and never promotes; healed, they re-pair;
//     a from w, b from w: nothing changes; b from everything, and either
//     direction of the peer link alone: the primary serves degraded, b
//     never owns the pair; healed, they re-pair;
//  2. a from everything: its lease expires, b owns the pair and promotes,
//     and the client's connection carries on with nothing acknowledged
//     lost; healed, the old primary learns it was superseded and releases
//     nothing.
//
// Never do both sides serve.
func TestFencedPartitionLab(t *testing.T) {
	prereq.Path(t, etcdBin, "etcd (contrib/setup/etcd.sh)")
	prereq.Commands(t, "ebtables")
	name, subnet := os.Getenv("LAB"), os.Getenv("LAB_SUBNET")
	if name == "" {
		name, subnet = "rrcfence", "10.105.0"
	}
	prereq.Root(t, "namespaces, cgroups, CRIU, iptables")
	prereq.Commands(t, "criu", "runc", "nsenter", "iptables", "ip6tables")
	t.Cleanup(func() {
		if left := lab.New(name, subnet).Leftovers(); len(left) > 0 {
			t.Errorf("left behind after lab down: %v", left)
		}
	})
	l := lab.New(name, subnet)
	l.Witness = true
	lab.StartLab(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	endpoints, err := l.WitnessEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := startRedisPair(t, l, redisPair{ID: "redis1", Witness: endpoints, WitnessTTL: fenceTTL})
	nc, err := lab.DialInNetns(l.Netns("client"), r.serviceIP+":6379")
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	cl := lab.NewRedisWorkload(nc)
	if err := cl.Run(ctx, 20); err != nil {
		t.Fatalf("before the partitions: %v", err)
	}
	if st, _ := r.primary.read(); st.Engine.Fence == nil || !st.Engine.Fence.Held || st.Engine.Fence.Lease == "" {
		t.Fatalf("primary not fenced: %+v", st.Engine.Fence)
	}

	// 1. The peer link only.
	if err := l.Partition(ctx, "a", "b", false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	r.primary.wait(t, "primary degraded", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateDegraded })
	r.backup.wait(t, "backup fencing", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateFencing })
	// The primary serves, unreplicated, for longer than its lease.
	for time.Since(cut) < 3*fenceTTL {
		if err := cl.Run(ctx, 5); err != nil {
			t.Fatalf("primary while the peer link is cut: %v", err)
		}
	}
	ps, _ := r.primary.read()
	bs, _ := r.backup.read()
	if bs.Engine.State != replication.StateFencing || ps.Engine.State != replication.StateDegraded || !ps.Engine.Fence.Held || !ps.Engine.Fence.Degraded {
		t.Fatalf("peer link cut for %s: primary %s (fence %+v), backup %s (%s): want one primary, holding its lease, degraded and recorded",
			time.Since(cut).Round(time.Millisecond), ps.Engine.State, ps.Engine.Fence, bs.Engine.State, bs.Engine.Reason)
	}
	t.Logf("peer link cut %s: primary %s, serving (lease %s held, %d lapses); backup %s: %s",
		time.Since(cut).Round(time.Millisecond), ps.Engine.State, ps.Engine.Fence.Lease, ps.Engine.Fence.Lapses, bs.Engine.State, bs.Engine.Reason)
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	r.primary.wait(t, "re-paired", 30*time.Second, func(s helperStatus) bool {
		return s.Engine.State == replication.StateInSync && s.Engine.Repairs > 0 && s.Engine.Fence != nil && !s.Engine.Fence.Degraded
	})
	r.backup.wait(t, "backup in sync again", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateInSync })
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the peer link healed: %v", err)
	}

	// 1b. Links that cost the pair nothing: each host's to the witness
	// host (a member each side still reaches a quorum through the other),
	// and the backup from everything (it cannot own the pair: no quorum).
	for _, pc := range []struct {
		name     string
		cut      func() error
		degraded bool // the primary loses its backup
	}{
		{"a from w", func() error { return l.Partition(ctx, "a", "w", false) }, false},
		{"b from w", func() error { return l.Partition(ctx, "b", "w", false) }, false},
		{"b isolated", func() error { return l.Isolate(ctx, "b") }, true},
		// One way: the primary stops hearing its backup, which still hears
		// it (and its goodbye); then the backup stops hearing a primary
		// that hears it (whose checkpoints go unacknowledged until the ack
		// bound makes it degraded).
		{"b to a only", func() error { return l.Partition(ctx, "b", "a", true) }, true},
		{"a to b only", func() error { return l.Partition(ctx, "a", "b", true) }, true},
	} {
		if err := pc.cut(); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		// Past a TTL: a lease not renewed meanwhile would have expired.
		for time.Since(cut) < 2*fenceTTL {
			if err := cl.Run(ctx, 5); err != nil {
				t.Fatalf("%s: the client: %v", pc.name, err)
			}
		}
		want := replication.StateInSync
		if pc.degraded {
			want = replication.StateDegraded
		}
		ps := r.primary.wait(t, pc.name+": primary "+string(want), 15*time.Second, func(s helperStatus) bool { return s.Engine.State == want })
		bs, _ := r.backup.read()
		if ps.Engine.State != want || !ps.Engine.Fence.Held || bs.Engine.State == replication.StatePromoting || bs.Engine.State == replication.StatePrimaryAfterFailover {
			t.Fatalf("%s for %s: primary %s (fence %+v), backup %s (%s)", pc.name, time.Since(cut).Round(time.Millisecond), ps.Engine.State, ps.Engine.Fence, bs.Engine.State, bs.Engine.Reason)
		}
		t.Logf("%s for %s: primary %s, lease held (%d lapses); backup %s", pc.name, time.Since(cut).Round(time.Millisecond), ps.Engine.State, ps.Engine.Fence.Lapses, bs.Engine.State)
		if err := l.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		r.primary.wait(t, pc.name+": in sync after the heal", 30*time.Second, func(s helperStatus) bool {
			return s.Engine.State == replication.StateInSync && s.Engine.Fence != nil && !s.Engine.Fence.Degraded
		})
		r.backup.wait(t, pc.name+": backup in sync after the heal", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateInSync })
	}

	// 2. a from everything, the client busy across it.
	stop, ran := make(chan struct{}), make(chan struct{})
	go func() { cl.RunUntil(stop); close(ran) }()
	time.Sleep(200 * time.Millisecond)
	isolated := time.Now()
	if err := l.Isolate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	after := r.backup.wait(t, "promotion", 20*time.Second, func(s helperStatus) bool {
		return s.Engine.State == replication.StatePrimaryAfterFailover
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("the client's request across the failover got no reply")
	}
	if err := cl.Err(); err != nil {
		t.Fatalf("across the failover (the connection must survive): %v", err)
	}
	f := after.Engine.Failover
	if f == nil || f.FenceMS <= 0 {
		t.Fatalf("failover without a fence step: %+v", f)
	}
	open := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	t.Logf("fenced failover: restored epoch %d; detection %.1f ms, fence (owner of the pair) %.1f ms, stop %.1f ms, prepare %.1f ms, restore %.1f ms, network %.1f ms, total (last heard → reachable) %.1f ms; isolation → reachable %s; first reply after the isolation %s after it",
		f.Epoch, f.DetectionMS, f.FenceMS, f.StopMS, f.PrepareMS, f.RestoreMS, f.NetworkMS, f.TotalMS,
		open.Sub(isolated).Round(time.Millisecond), cl.FirstReplyAfter(isolated).Round(time.Millisecond))
	// The old primary, cut off, released nothing once its lease could
	// have expired; healed, it learns it was superseded.
	before, _ := r.primary.read()
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	old := r.primary.wait(t, "old primary superseded", 10*time.Second, func(s helperStatus) bool {
		return s.Engine.State == replication.StateSuperseded
	})
	time.Sleep(time.Second)
	last, _ := r.primary.read()
	if last.Engine.Gate.Released != before.Engine.Gate.Released {
		t.Errorf("the superseded primary released %d packets after the heal", last.Engine.Gate.Released-before.Engine.Gate.Released)
	}
	t.Logf("old primary after the heal: %s (%s); fence %+v", old.Engine.State, old.Engine.Reason, old.Engine.Fence)
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the heal, on the promoted backup: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	r.primary.killed.Store(true) // superseded: its close may find its service gone
}
