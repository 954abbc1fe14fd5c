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
)

// TestBackupLossAndRepairThroughContainerd: the backup's host crashes under
// a busy client; the primary keeps serving on the same connection,
// unreplicated, and rrcctl says degraded. Host b comes back, a new backup
// is started on it with ctr run, and the primary re-pairs by itself (one
// full checkpoint). Then the primary's host crashes and the new backup
// takes over with every acknowledged write.
func TestBackupLossAndRepairThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t, "rrcrp", "10.92.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := host{t: t, lab: l, name: "b"}
	const id = "rp1"
	serviceIP := l.Subnet + ".200"
	p := pairSpec{id: id, image: redis, serviceIP: serviceIP, listen: l.IP("b") + ":7100"}
	rl.startPair(ctx, t, p)

	cl := redisClient(ctx, t, l, serviceIP+":6379", 10)

	// The backup's host fails in the middle of the stream.
	crashDuring(t, l, "b", 100*time.Millisecond, func() {
		if err := cl.Run(ctx, 20); err != nil {
			t.Fatalf("across the backup's crash (the connection must survive): %v", err)
		}
	})
	degraded := waitStatus(t, l, "a", id, "primary degraded", 15*time.Second, isState(replication.StateDegraded))
	if g := degraded.Engine.Gate; g == nil || !g.PassThrough {
		t.Errorf("degraded primary's gate does not pass output through: %+v", g)
	}
	n := len(cl.Lat)
	if err := cl.Run(ctx, 20); err != nil {
		t.Fatalf("degraded: %v", err)
	}
	var sum time.Duration
	for _, d := range cl.Lat[n:] {
		sum += d
	}
	if mean := sum / time.Duration(len(cl.Lat)-n); mean > 30*time.Millisecond {
		t.Errorf("degraded replies take %s on average: output still held?", mean)
	}
	// The status file is rewritten every second: the first dial comes after it.
	waitStatus(t, l, "a", id, "primary re-pairing", 5*time.Second, func(s status.Published) bool {
		return strings.Contains(s.Engine.Reason, "re-pairing")
	})
	out := rrcctl(t, l, rl.bin, rl.dir, "a")
	t.Logf("rrcctl status on a, backup host down:\n%s", out)
	if !rrcctlSays(out, id, "degraded") || !strings.Contains(out, "re-pairing") {
		t.Errorf("rrcctl status on a does not say degraded and re-pairing:\n%s", out)
	}

	// Host b again (a fresh network namespace, its containerd restarted):
	// containerd finds the dead shim of the old backup and runs the shim's
	// delete, which removes what it left; then a new backup is started.
	if err := l.Restart(ctx, "b"); err != nil {
		t.Fatalf("restart b: %v", err)
	}
	b.cleanup(id)
	nothingLeft(t, l, "b", id)
	rl.startBackup(ctx, t, p)
	repaired := waitStatus(t, l, "a", id, "primary re-paired and in sync", 60*time.Second, func(s status.Published) bool {
		return s.Engine.State == replication.StateInSync && s.Engine.Repairs >= 1
	})
	waitStatus(t, l, "b", id, "new backup in sync", 10*time.Second, isState(replication.StateInSync))
	out = rrcctl(t, l, rl.bin, rl.dir, "a")
	t.Logf("rrcctl status on a, re-paired:\n%s", out)
	if !rrcctlSays(out, id, "in-sync") || !strings.Contains(out, "re-paired with a backup") {
		t.Errorf("rrcctl status on a after re-pairing:\n%s", out)
	}
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("re-paired: %v", err)
	}

	// Now the primary's host fails: the new backup takes over.
	after, crashAt := failOver(ctx, t, l, id, cl)
	f := after.Engine.Failover
	t.Logf("re-paired after %d attempt(s) of the primary; failover to the new backup: restored epoch %d (the primary had acknowledged %d when re-paired), total %.1f ms, first reply %s after the crash; %d INCRs on one connection",
		repaired.Engine.Repairs, f.Epoch, repaired.Engine.CommittedEpoch, f.TotalMS, cl.FirstReplyAfter(crashAt).Round(time.Millisecond), len(cl.Incrs))
	if f.Epoch < repaired.Engine.CommittedEpoch {
		t.Errorf("restored epoch %d is older than what the new backup had committed when the primary was in sync (%d)", f.Epoch, repaired.Engine.CommittedEpoch)
	}
	if code := b.killAndDelete(ctx, id, "KILL"); code != 128+9 {
		t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
	}
	nothingLeft(t, l, "b", id)
}
