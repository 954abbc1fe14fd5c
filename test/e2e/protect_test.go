// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
)

// TestProtectAfterFailover: after a failover, the restored container takes
// a new backup (rrcctl protect) on the repaired old host, and survives the
// failure of its own host in turn, on the same client connection with every
// acknowledged write: a → b → a.
func TestProtectAfterFailover(t *testing.T) {
	rl := startReplicationLab(t, "rrcprot", "10.110.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := host{t: t, lab: l, name: "a"}
	const id, again = "p1", "p1-again"
	p := pairSpec{id: id, image: redis, serviceIP: l.Subnet + ".200", listen: l.IP("b") + ":7100"}
	rl.startPair(ctx, t, p)
	cl := redisClient(ctx, t, l, p.serviceIP+":6379", 25)
	failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)

	// A refused protection changes nothing: the address is not one.
	if out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", "nowhere", id); err == nil || !strings.Contains(out, "host:port") {
		t.Errorf("rrcctl protect with a bad address: %v\n%s", err, out)
	}

	// Host a comes back; a new backup of the pair starts there.
	if err := l.Restart(ctx, "a"); err != nil {
		t.Fatalf("restart a: %v", err)
	}
	newBackup := l.IP("a") + ":7101"
	a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
		"--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen=" + newBackup,
		"--annotation", "io.rrc.peer-name=" + l.IP("b"), "--annotation", "io.rrc.pair=" + id}, p.annotations()...), p.image, again)...)
	t.Cleanup(func() { a.cleanup(again) })
	out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", newBackup, id)
	t.Logf("rrcctl protect on b: %s", out)
	if err != nil {
		t.Fatalf("rrcctl protect: %v", err)
	}
	inSync := isState(replication.StateInSync)
	st := waitStatus(t, l, "b", id, "the restored container in sync with its new backup", 60*time.Second, inSync)
	if st.Engine.Role != replication.RolePrimary || st.Engine.Failover == nil || st.Engine.Repairs != 1 {
		t.Errorf("b after the protection: role %q, failover %v, re-pairings %d", st.Engine.Role, st.Engine.Failover != nil, st.Engine.Repairs)
	}
	waitStatus(t, l, "a", again, "the new backup in sync", 10*time.Second, inSync)
	if out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", newBackup, id); err == nil || !strings.Contains(out, "protected already") {
		t.Errorf("a second rrcctl protect: %v\n%s", err, out)
	}
	if err := cl.Run(ctx, 25); err != nil {
		t.Fatalf("while the new backup came in sync (the connection must survive): %v", err)
	}

	// b fails in turn: a's new backup takes over, the client carries on.
	crashDuring(t, l, "b", 150*time.Millisecond, func() {
		if err := cl.Run(ctx, 25); err != nil {
			t.Fatalf("across the second failover (the connection must survive): %v", err)
		}
	})
	after := waitStatus(t, l, "a", again, "second promotion", 30*time.Second, isState(replication.StatePrimaryAfterFailover))
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the second failover: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	f := after.Engine.Failover
	t.Logf("second failover: epoch %d, detection %.1f ms, restore %.1f ms, total %.1f ms; %d INCRs on one connection",
		f.Epoch, f.DetectionMS, f.RestoreMS, f.TotalMS, len(cl.Incrs))
	if code := a.killAndDelete(ctx, again, "KILL"); code != 128+9 {
		t.Errorf("exit status of the twice-restored task: %d, want %d", code, 128+9)
	}
	nothingLeft(t, l, "a", again)
}
