// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/test/lab"
)

// TestProtectAfterFailover: after a failover, each restored container
// takes a new backup (rrcctl protect) on the repaired old host and survives
// the failure of its own host in turn, on the same client connection with
// every acknowledged write: a → b → a, one pair in epoch mode and one in
// hybrid mode, failing over together.
func TestProtectAfterFailover(t *testing.T) {
	rl := startReplicationLab(t, "rrcprot", "10.110.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := host{t: t, lab: l, name: "a"}
	type protected struct {
		pairSpec
		again, newBackup string // the new backup's container on a, and its listen address
		cl               *lab.RedisWorkload
	}
	pairs := []*protected{
		{pairSpec: pairSpec{id: "p1", image: redis, serviceIP: l.Subnet + ".200", listen: l.IP("b") + ":7100"},
			again: "p1-again", newBackup: l.IP("a") + ":7101"},
		{pairSpec: pairSpec{id: "h1", image: redis, serviceIP: l.Subnet + ".201", listen: l.IP("b") + ":7102",
			extra: []string{"--annotation", "io.rrc.mode=hybrid"}}, again: "h1-again", newBackup: l.IP("a") + ":7103"},
	}
	run := func(what string, rounds int) {
		t.Helper()
		for _, p := range pairs {
			if err := p.cl.Run(ctx, rounds); err != nil {
				t.Fatalf("%s: %s (the connection must survive): %v", p.id, what, err)
			}
		}
	}
	// failOver crashes h while the clients run, waits until each pair's
	// container on the other host (id) took over, runs the clients on and
	// checks every reply.
	failOver := func(h, other string, id func(*protected) string) {
		t.Helper()
		crashDuring(t, l, h, 150*time.Millisecond, func() { run("across the failover of "+h, 25) })
		for _, p := range pairs {
			st := waitStatus(t, l, other, id(p), "promotion on "+other, 30*time.Second, isState(replication.StatePrimaryAfterFailover))
			f := st.Engine.Failover
			t.Logf("%s: %s took over from epoch %d: detection %.1f ms, restore %.1f ms, replay %.1f ms, total %.1f ms",
				p.id, other, f.Epoch, f.DetectionMS, f.RestoreMS, f.ReplayMS, f.TotalMS)
		}
		run("after the failover of "+h, 10)
		for _, p := range pairs {
			if err := p.cl.Verify(); err != nil {
				t.Fatalf("%s: %v", p.id, err)
			}
		}
	}
	for _, p := range pairs {
		rl.startPair(ctx, t, p.pairSpec)
		p.cl = redisClient(ctx, t, l, p.serviceIP+":6379", 25)
	}
	failOver("a", "b", func(p *protected) string { return p.id })

	// A refused protection changes nothing: the address is not one.
	if out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", "nowhere", "p1"); err == nil || !strings.Contains(out, "host:port") {
		t.Errorf("rrcctl protect with a bad address: %v\n%s", err, out)
	}

	// Host a comes back; a new backup of each pair starts there, and b
	// protects its restored containers with them.
	if err := l.Restart(ctx, "a"); err != nil {
		t.Fatalf("restart a: %v", err)
	}
	for _, p := range pairs {
		a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
			"--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen=" + p.newBackup,
			"--annotation", "io.rrc.peer-name=" + l.IP("b"), "--annotation", "io.rrc.pair=" + p.id}, p.annotations()...), p.image, p.again)...)
		t.Cleanup(func() { a.cleanup(p.again) })
		out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", p.newBackup, p.id)
		t.Logf("rrcctl protect on b: %s", out)
		if err != nil {
			t.Fatalf("rrcctl protect %s: %v", p.id, err)
		}
	}
	inSync := isState(replication.StateInSync)
	for _, p := range pairs {
		st := waitStatus(t, l, "b", p.id, "the restored container in sync with its new backup", 60*time.Second, inSync)
		if st.Engine.Role != replication.RolePrimary || st.Engine.Failover == nil || st.Engine.Repairs != 1 {
			t.Errorf("%s on b after the protection: role %q, failover %v, re-pairings %d", p.id, st.Engine.Role, st.Engine.Failover != nil, st.Engine.Repairs)
		}
		waitStatus(t, l, "a", p.again, "the new backup in sync", 10*time.Second, inSync)
	}
	if out, err := rrcctlRun(l, rl.bin, rl.dir, "b", l.Namespace("b"), "protect", "-backup", pairs[0].newBackup, pairs[0].id); err == nil || !strings.Contains(out, "protected already") {
		t.Errorf("a second rrcctl protect: %v\n%s", err, out)
	}
	out := rrcctl(t, l, rl.bin, rl.dir, "b")
	t.Logf("rrcctl status on b, protected:\n%s", out)
	run("while the new backups came in sync", 25)

	// b fails in turn: the new backups on a take over.
	failOver("b", "a", func(p *protected) string { return p.again })
	for _, p := range pairs {
		if code := a.killAndDelete(ctx, p.again, "KILL"); code != 128+9 {
			t.Errorf("exit status of %s, restored twice: %d, want %d", p.again, code, 128+9)
		}
		nothingLeft(t, l, "a", p.again)
	}
}
