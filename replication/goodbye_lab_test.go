// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/test/lab"
)

// The goodbye lab tests run in a lab of their own, so that they can run
// beside the other lab tests on one machine.
const byeLab, byeSubnet = "rrcbye", "10.96.0"

// startByePair is Redis on a replicated to b, in sync, with a client on
// the lab's client host already talking to it.
func startByePair(t *testing.T, mode replication.Mode) *replicatedRedis {
	t.Helper()
	l := startEngineLab(t, byeLab, byeSubnet)
	r := startRedisPair(t, l, redisPair{ID: "redis1", Mode: mode})
	nc, err := lab.DialInNetns(l.Netns("client"), r.serviceIP+":6379")
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	r.cl = lab.NewRedisWorkload(nc)
	if err := r.cl.Run(r.ctx, 25); err != nil {
		t.Fatalf("before the failure: %v", err)
	}
	return r
}

// TestPrimaryProcessKilledLab kills the primary's engine process with
// SIGKILL while its host stays up (links not cut): its kernel closes the
// peer connection without a goodbye, and then, as containerd's clean-up of
// a dead shim does, the container and its service network on a go. The
// backup must take that for a failure — after the detection bound, not
// the ten times longer grace of a silent process — promote, and carry the
// client's connection on with every acknowledged write; in hybrid mode
// after replaying the log, which must reset no connection.
func TestPrimaryProcessKilledLab(t *testing.T) {
	for _, mode := range []replication.Mode{replication.ModeEpoch, replication.ModeHybrid} {
		t.Run(string(mode), func(t *testing.T) { testPrimaryProcessKilled(t, mode) })
	}
}

func testPrimaryProcessKilled(t *testing.T, mode replication.Mode) {
	r := startByePair(t, mode)
	l, ctx, cl := r.l, r.ctx, r.cl
	stop, ran := make(chan struct{}), make(chan struct{})
	go func() { cl.RunUntil(stop); close(ran) }()
	time.Sleep(250 * time.Millisecond)
	// Both in sync right now: on this loaded machine a primary may falsely
	// declare its backup failed and go degraded for a moment (it says
	// goodbye and re-pairs), and a primary killed then is rightly not
	// replaced from a stale checkpoint.
	r.primary.wait(t, "primary in sync before the kill", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateInSync })
	r.backup.wait(t, "backup in sync before the kill", 10*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateInSync })
	killedAt := time.Now()
	r.primary.killed.Store(true)
	if err := r.primary.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing the primary's engine: %v", err)
	}
	<-r.primary.exited
	// containerd's clean-up of the dead shim: the service network it left
	// (its owner is gone), then the container.
	if removed, err := servicenet.CleanupStale(ctx, l.State("a")+"/servicenet", slog.Default()); err != nil || len(removed) != 1 {
		t.Errorf("removing the dead primary's service network: %v (removed %v)", err, removed)
	}
	cleanedAt := time.Now()
	if _, err := l.Ctr(ctx, "a", "task", "kill", "-s", "SIGKILL", "redis1"); err != nil {
		t.Errorf("kill the dead primary's container: %v", err)
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
		t.Fatalf("across the failover (connection must survive): %v", err)
	}
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	st := after.Engine
	f := st.Failover
	if f == nil || !strings.Contains(st.Reason, "without a goodbye") {
		t.Fatalf("backup took over, but not for the connection ending without a goodbye: reason %q, failover %+v", st.Reason, f)
	}
	// 30 ms × 3 from the last frame; a silent process would get ten times
	// that (900 ms).
	if f.DetectionMS < 85 || f.DetectionMS > 600 {
		t.Errorf("detection %.1f ms after the last frame, want the detection bound (90 ms)", f.DetectionMS)
	}
	reachable := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	t.Logf("primary engine killed: backup restored epoch %d; detection %.1f ms, restore %.1f ms, total (last heard → reachable) %.1f ms; kill → reachable %s (containerd-like clean-up took %s); client: %d INCRs, %d keys, longest reply %s; reason %q",
		f.Epoch, f.DetectionMS, f.RestoreMS, f.TotalMS, reachable.Sub(killedAt).Round(time.Millisecond), cleanedAt.Sub(killedAt).Round(time.Millisecond),
		len(cl.Incrs), len(cl.Keys), cl.Slowest.Round(time.Millisecond), st.Reason)
	if mode == replication.ModeHybrid {
		rp := f.Replay
		if rp == nil {
			t.Fatalf("hybrid failover without a replay: %+v", f)
		}
		t.Logf("replay: %d records after the checkpoint, %d inputs fed, %d outputs judged, %d diverged, %d reset; %.1f ms",
			rp.Records, rp.Inputs, rp.Outputs, rp.Diverged, rp.Reset, f.ReplayMS)
		if rp.Reset != 0 {
			t.Errorf("the replay reset %d connections of a deterministic server (diverged %d, pending %d)", rp.Reset, rp.Diverged, rp.Pending)
		}
	}
	if rc := st.Restored; rc == nil || rc.Pid <= 0 {
		t.Errorf("restored container not reported: %+v", rc)
	} else {
		sameNetns(t, rc.Pid, r.backupNetns)
	}
}

// TestPrimaryGoodbyeLab closes the primary's engine on purpose (its
// helper's Close, as the shim does on delete): it says goodbye, and the
// backup must not promote, and must say why it is disconnected.
func TestPrimaryGoodbyeLab(t *testing.T) {
	r := startByePair(t, replication.ModeEpoch)
	closedAt := time.Now()
	if err := r.primary.stdin.(io.Closer).Close(); err != nil { // the helper closes its engine on EOF
		t.Fatal(err)
	}
	select {
	case <-r.primary.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the primary's engine did not close")
	}
	// Far beyond the detection bound (90 ms) and a silent process's grace
	// (900 ms): a backup that took the close for a failure would have
	// promoted by now.
	time.Sleep(2 * time.Second)
	st := r.backup.wait(t, "backup's state after the goodbye", 5*time.Second, func(s helperStatus) bool {
		return s.Engine.State != replication.StateInSync
	})
	if st.Engine.State != replication.StateDisconnected || !strings.Contains(st.Engine.Reason, "said goodbye (shutdown") || st.Engine.Failover != nil {
		t.Fatalf("after the primary's goodbye the backup is %q (%s), failover %+v", st.Engine.State, st.Engine.Reason, st.Engine.Failover)
	}
	if b, err := os.ReadFile(r.primary.log); err != nil || !strings.Contains(string(b), "said goodbye") {
		t.Errorf("the primary's log does not say it said goodbye (%v)", err)
	}
	t.Logf("primary closed on purpose; %s later the backup is %q: %s", time.Since(closedAt).Round(time.Millisecond), st.Engine.State, st.Engine.Reason)
}
