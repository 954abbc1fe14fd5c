// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls/pki"
	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/shim"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// engineProc is an engine process started in a lab host's netns.
type engineProc struct {
	cmd    *exec.Cmd
	stdin  interface{ Write([]byte) (int, error) }
	status string
	log    string
	exited chan struct{}
	killed atomic.Bool // its host was crashed: no clean exit expected
}

func (e *engineProc) send(t *testing.T, v string) {
	t.Helper()
	if _, err := e.stdin.Write([]byte(v + "\n")); err != nil {
		t.Fatalf("writing to engine: %v", err)
	}
}

func (e *engineProc) read() (helperStatus, error) {
	var s helperStatus
	b, err := os.ReadFile(e.status)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// waitPhase waits until the engine publishes phase (or cond holds).
func (e *engineProc) wait(t *testing.T, what string, timeout time.Duration, cond func(helperStatus) bool) helperStatus {
	t.Helper()
	var last helperStatus
	err := lab.WaitFor(timeout, func() error {
		s, err := e.read()
		if err != nil {
			return err
		}
		last = s
		if s.Error != "" {
			return fmt.Errorf("engine failed: %s", s.Error)
		}
		if !cond(s) {
			return fmt.Errorf("phase %s, state %s", s.Phase, s.Engine.State)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last %+v)\nengine log:\n%s", what, err, last, e.logTail())
	}
	return last
}

func (e *engineProc) logTail() string {
	b, _ := os.ReadFile(e.log)
	s := string(b)
	limit := 6000
	if strings.Contains(s, "goroutine ") { // a SIGQUIT dump
		limit = 60000
	}
	if len(s) > limit {
		s = s[len(s)-limit:]
	}
	return s
}

func startEngine(t *testing.T, l *lab.Lab, host string, a helperArgs) *engineProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a.StatusFile = filepath.Join(dir, "status.json")
	arg, _ := json.Marshal(a)
	cmd := exec.Command("nsenter", "--net="+l.Netns(host), "--", exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(arg))
	logPath := filepath.Join(dir, "engine.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s engine: %v", a.Role, err)
	}
	e := &engineProc{cmd: cmd, stdin: stdin, status: a.StatusFile, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(e.exited) }()
	t.Cleanup(func() {
		stdin.Close() // the engine ends on EOF: Close, remove what it made
		select {
		case <-e.exited:
		case <-time.After(15 * time.Second):
			// SIGQUIT first: the Go runtime writes every goroutine's stack
			// into the engine's log, which says where it hung.
			t.Errorf("%s engine did not exit; killing it (its goroutines are in its log)", a.Role)
			cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-e.exited:
			case <-time.After(2 * time.Second):
				cmd.Process.Kill()
				<-e.exited
			}
		}
		// The backup must end cleanly (the primary was killed by the crash);
		// a race report from either fails the test.
		if code := cmd.ProcessState.ExitCode(); !e.killed.Load() && code != 0 {
			t.Errorf("%s engine exit status %d", a.Role, code)
		}
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "DATA RACE") {
			t.Errorf("%s engine: data race reported", a.Role)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("%s engine log (tail):\n%s", a.Role, e.logTail())
		}
	})
	return e
}

// replicatedRedis is Redis on lab host a replicated to b, in sync, with a
// client connected from the lab's client host.
type replicatedRedis struct {
	l               *lab.Lab
	ctx             context.Context
	primary, backup *engineProc
	primaryNetns    string
	backupNetns     string
	serviceIP       string
	cl              *lab.RedisWorkload // startReplicatedRedis only
}

// startReplicatedRedis sets up the lab, both engines (each in its host's
// netns), Redis in the gated service namespace on a, and the client.
func startReplicatedRedis(t *testing.T, mode replication.Mode, epoch time.Duration) *replicatedRedis {
	t.Helper()
	name, subnet := os.Getenv("LAB"), os.Getenv("LAB_SUBNET")
	if name == "" {
		name, subnet = "rrceng", "10.86.0"
	}
	l := startEngineLab(t, name, subnet)
	r := startRedisPair(t, l, redisPair{ID: "redis1", Mode: mode, Epoch: epoch})
	nc, err := lab.DialInNetns(l.Netns("client"), r.serviceIP+":6379")
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	r.cl = lab.NewRedisWorkload(nc)
	return r
}

// startEngineLab skips without root or the binaries the engine needs, and
// brings the lab up (down and checked for leftovers at cleanup).
func startEngineLab(t *testing.T, name, subnet string) *lab.Lab {
	t.Helper()
	prereq.Root(t, "namespaces, cgroups, CRIU, iptables")
	prereq.Commands(t, "criu", "runc", "nsenter", "iptables", "ip6tables")
	t.Cleanup(func() { // runs after lab.Start's Down
		if left := lab.New(name, subnet).Leftovers(); len(left) > 0 {
			t.Errorf("left behind after lab down: %v", left)
		}
	})
	return lab.Start(t, name, subnet)
}

// redisPair names one replicated Redis of a lab: its container ID (and the
// backup's directories derived from it) and the primary's fault injection.
type redisPair struct {
	ID     string
	Inject *injectArgs
	Mode   replication.Mode // "": epoch
	Epoch  time.Duration    // 0: 100 ms
	// Witness fences the pair with these etcd endpoints (the lab's).
	Witness []string
	// WitnessTTL is the owner's lease (0: witness.DefaultTTL).
	WitnessTTL time.Duration
}

// startRedisPair starts both engines (each in its host's netns) and Redis
// in the gated service namespace on a, and waits until the backup is in
// sync. Several pairs may follow one another in one lab (host a restarted
// after each crash); their IDs must differ.
func startRedisPair(t *testing.T, l *lab.Lab, rp redisPair) *replicatedRedis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	t.Cleanup(cancel)

	certs, err := pki.Generate(t.TempDir(), l.IP("a"), l.IP("b"))
	if err != nil {
		t.Fatal(err)
	}
	pair, id := "redis1", rp.ID
	serviceIP := l.Subnet + ".200"
	common := helperArgs{Pair: pair, ServiceIP: serviceIP + "/24", ServiceLink: "eth0", CA: certs.CAFile,
		Epoch: cmp.Or(rp.Epoch, 100*time.Millisecond), Mode: rp.Mode}
	witnessOf := func(host string) *witnessArgs {
		if rp.Witness == nil {
			return nil
		}
		return &witnessArgs{Endpoints: rp.Witness, Host: host, TTL: rp.WitnessTTL}
	}

	ba := common
	ba.Role, ba.Listen, ba.PeerName = replication.RoleBackup, l.IP("b")+":7100", l.IP("a")
	ba.Cert, ba.Key = certs.Hosts[l.IP("b")].CertFile, certs.Hosts[l.IP("b")].KeyFile
	ba.ServicenetDir = l.State("b") + "/servicenet"
	ba.StoreDir = l.State("b") + "/rrc-store"
	ba.RestoreRuncRoot, ba.RestoreID = l.State("b")+"/runc-restored", id+"-restored"
	ba.RestoreCgroup, ba.RestoreWorkDir = "/"+l.Namespace("b")+"/"+id+"-restored", l.State("b")+"/restore"
	ba.Witness = witnessOf("b")
	if id != "redis1" { // one store per pair: a new pair starts from nothing
		ba.StoreDir, ba.RestoreWorkDir = l.State("b")+"/rrc-store-"+id, l.State("b")+"/restore-"+id
		t.Cleanup(func() { os.RemoveAll(ba.StoreDir); os.RemoveAll(ba.RestoreWorkDir) }) // after the backup's exit
	}
	backup := startEngine(t, l, "b", ba)
	bst := backup.wait(t, "backup's standby network", 15*time.Second, func(s helperStatus) bool { return s.Phase == "ready" })

	// The backup restores with its own spec (naming its standby netns) and
	// its own copy of the image's layers: a container created, never
	// started, in b's containerd.
	if _, err := l.Ctr(ctx, "b", "container", "create", "--runtime", "io.containerd.runc.v2",
		"--with-ns", "network:"+bst.Netns, lab.RedisImage, id); err != nil {
		t.Fatalf("create standby container on b: %v", err)
	}
	specFile, lower := standbySpec(ctx, t, l, id)
	backup.send(t, mustJSON(backupGo{SpecFile: specFile, Lower: lower}))
	backup.wait(t, "backup listening", 10*time.Second, func(s helperStatus) bool { return s.Phase == "running" })

	pa := common
	pa.Role, pa.Peer = replication.RolePrimary, l.IP("b")+":7100"
	pa.Cert, pa.Key = certs.Hosts[l.IP("a")].CertFile, certs.Hosts[l.IP("a")].KeyFile
	pa.ServicenetDir = l.State("a") + "/servicenet"
	pa.RuncRoot, pa.ContainerID = "/run/containerd/runc/"+l.Namespace("a"), id
	pa.WorkDir = l.State("a") + "/rrc-images"
	pa.Inject = rp.Inject
	pa.Witness = witnessOf("a")
	preload, helper := lab.MemoryTools(t)
	pa.Memory = &criu.MemoryTracking{Preload: preload, Helper: []string{helper}}
	primary := startEngine(t, l, "a", pa)
	pst := primary.wait(t, "primary's gate", 15*time.Second, func(s helperStatus) bool { return s.Phase == "gated" })

	// The container starts behind the gate: nothing it sends leaves before
	// the backup holds a checkpoint with it. The rules are in the gate
	// namespace that forwards its traffic, none in its own (where it could
	// delete them).
	gateNS := filepath.Join(filepath.Dir(pst.Netns), ".gate", filepath.Base(pst.Netns))
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+gateNS, "iptables", "-w", "-t", "mangle", "-S").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "-A PREROUTING -i ct0 -j RRC-OUT") || !strings.Contains(string(out), "NFQUEUE") {
		t.Fatalf("gate rules not installed before the container starts: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+pst.Netns, "iptables", "-w", "-t", "mangle", "-S").CombinedOutput(); err != nil ||
		strings.Contains(string(out), "RRC") {
		t.Fatalf("gate rules in the container's own namespace: %v\n%s", err, out)
	}
	if _, err := l.Ctr(ctx, "a", "run", "-d", "--runtime", "io.containerd.runc.v2",
		"--with-ns", "network:"+pst.Netns, lab.RedisImage, id); err != nil {
		t.Fatalf("run redis on a: %v", err)
	}
	waitRunning(ctx, t, l, id)
	st, err := criu.ReadRuncState("/run/containerd/runc/"+l.Namespace("a"), id)
	if err != nil {
		t.Fatal(err)
	}
	sameNetns(t, st.InitPid, pst.Netns)
	primary.send(t, "start")
	primary.wait(t, "backup in sync", 20*time.Second, func(s helperStatus) bool { return s.Engine.State == replication.StateInSync })
	return &replicatedRedis{l: l, ctx: ctx, primary: primary, backup: backup, primaryNetns: pst.Netns,
		backupNetns: bst.Netns, serviceIP: serviceIP}
}

// TestFailoverRedisLab replicates Redis from lab host a to host b in each
// mode, crashes a while a client on the lab's client host keeps one TCP
// connection busy, and checks that b takes over on that same connection
// with every acknowledged write and no INCR going backwards. In hybrid mode
// the replies were released on the log, ahead of the checkpoints: b
// replays the log after its checkpoint, and nothing may diverge.
//
// hybrid-accepted checkpoints every 5 s: the crash comes before the second,
// so both client connections were accepted after the checkpoint the backup
// restores; the replay accepts them again with sequence numbers and
// timestamps of its own, which the gate translates from then on.
func TestFailoverRedisLab(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  replication.Mode
		epoch time.Duration
	}{
		{"epoch", replication.ModeEpoch, 0},
		{"hybrid", replication.ModeHybrid, 0},
		{"hybrid-accepted", replication.ModeHybrid, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { testFailoverRedis(t, tc.mode, tc.epoch) })
	}
}

func testFailoverRedis(t *testing.T, mode replication.Mode, epoch time.Duration) {
	r := startReplicatedRedis(t, mode, epoch)
	l, ctx, primary, backup, cl := r.l, r.ctx, r.primary, r.backup, r.cl

	// Load before the crash, then crash a in the middle of the stream.
	if err := cl.Run(ctx, 25); err != nil {
		t.Fatalf("before the crash: %v", err)
	}
	latMean, latP99 := cl.Latency()
	// The client keeps the connection busy from before the crash until
	// after the promotion: in hybrid mode a reply takes about a millisecond,
	// so the log after the last checkpoint is full of requests to replay.
	stop, ran := make(chan struct{}), make(chan struct{})
	go func() { cl.RunUntil(stop); close(ran) }()
	time.Sleep(250 * time.Millisecond)
	before, _ := primary.read() // under load (≤ 50 ms old)
	// A second connection opened right before the crash: almost always
	// after the last committed checkpoint, so in hybrid mode the replay
	// accepts it again with numbers of its own, which the gate translates.
	nc, err := lab.DialInNetns(l.Netns("client"), r.serviceIP+":6379")
	if err != nil {
		t.Fatalf("late client connect: %v", err)
	}
	defer nc.Close()
	late := lab.NewRedisWorkload(nc)
	late.Prefix = "late:"
	if err := late.Run(ctx, 1); err != nil {
		t.Fatalf("late client before the crash: %v", err)
	}
	lateRan := make(chan struct{})
	go func() { late.RunUntil(stop); close(lateRan) }()
	crashAt := time.Now() // the links are cut first thing
	primary.killed.Store(true)
	if err := l.Crash(context.Background(), "a"); err != nil {
		t.Errorf("crash a: %v", err)
	}
	after := backup.wait(t, "promotion", 20*time.Second, func(s helperStatus) bool {
		return s.Engine.State == replication.StatePrimaryAfterFailover
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	for _, done := range []chan struct{}{ran, lateRan} {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("a client's request across the failover got no reply")
		}
	}
	if err := cl.Err(); err != nil {
		t.Fatalf("across the failover (connection must survive): %v", err)
	}
	if err := late.Err(); err != nil {
		t.Fatalf("the connection opened right before the crash, across the failover: %v", err)
	}
	if err := late.Run(ctx, 5); err != nil {
		t.Fatalf("the late connection after the failover: %v", err)
	}
	if err := late.Verify(); err != nil {
		t.Fatalf("the late connection: %v", err)
	}
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}

	f := after.Engine.Failover
	ps := before.Engine
	t.Logf("primary before crash: %d epochs (%d skipped), committed %d, pause ms mean %.1f p90 %.1f max %.1f, input held ms mean %.1f p90 %.1f, bytes/epoch %.0f (sent %.0f), ack ms mean %.1f p90 %.1f, gate held %d; client reply before the crash mean %s p99 %s",
		ps.Epochs, ps.SkippedEpochs, ps.CommittedEpoch, ps.PauseMS.Mean, ps.PauseMS.P90, ps.PauseMS.Max,
		ps.InputHoldMS.Mean, ps.InputHoldMS.P90, ps.BytesPerEpoch.Mean, ps.SentPerEpoch.Mean, ps.AckMS.Mean, ps.AckMS.P90, ps.Gate.Held,
		latMean.Round(100*time.Microsecond), latP99.Round(100*time.Microsecond))
	open := f.LastHeard.Add(time.Duration(f.TotalMS * float64(time.Millisecond)))
	t.Logf("failover: restored epoch %d; detection %.1f ms, stop receiving %.1f ms, prepare %.1f ms, restore %.1f ms, network (link+GARP) %.1f ms, total (last heard → reachable) %.1f ms; crash → reachable %s",
		f.Epoch, f.DetectionMS, f.StopMS, f.PrepareMS, f.RestoreMS, f.NetworkMS, f.TotalMS, open.Sub(crashAt).Round(time.Millisecond))
	t.Logf("client: %d INCRs, %d keys written and read back on one connection; longest reply %s; first reply after the crash came %s after it (%s after the service was reachable)",
		len(cl.Incrs), len(cl.Keys), cl.Slowest.Round(time.Millisecond), cl.FirstReplyAfter(crashAt).Round(time.Millisecond), cl.FirstReplyAfter(open).Round(time.Millisecond))
	if mode == replication.ModeHybrid {
		rp := f.Replay
		if rp == nil {
			t.Fatalf("hybrid failover without a replay: %+v", f)
		}
		if lg := ps.Log; lg != nil {
			t.Logf("primary's log before the crash: %d records, %d bytes in %d batches, round trip ms mean %.2f p90 %.2f max %.2f",
				lg.Records, lg.Bytes, lg.Batches, lg.RoundTripMS.Mean, lg.RoundTripMS.P90, lg.RoundTripMS.Max)
		}
		t.Logf("replay: %d records after the checkpoint, %d inputs fed, %d outputs judged, %d waits, %d diverged, %d pending, %d accepted after the checkpoint (%d translated), %d reset; %.1f ms; the late connection: %d rounds",
			rp.Records, rp.Inputs, rp.Outputs, rp.Waits, rp.Diverged, rp.Pending, rp.Accepted, rp.Translated, rp.Reset, f.ReplayMS, len(late.Keys))
		if rp.Translated != rp.Accepted {
			t.Errorf("%d connections accepted after the checkpoint, %d translated", rp.Accepted, rp.Translated)
		}
		if epoch > time.Second && rp.Accepted != 2 {
			t.Errorf("%d connections accepted after the checkpoint, want both clients'", rp.Accepted)
		}
		if rp.Reset != 0 {
			t.Errorf("the replay reset %d connections of a deterministic server (diverged %d, pending %d)", rp.Reset, rp.Diverged, rp.Pending)
		}
	}
	if rc := after.Engine.Restored; rc == nil || rc.Pid <= 0 {
		t.Errorf("restored container not reported: %+v", rc)
	} else {
		sameNetns(t, rc.Pid, r.backupNetns)
	}
}

// sameNetns checks that pid's network namespace is the one bound at path.
func sameNetns(t *testing.T, pid int, path string) {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		t.Fatalf("netns of pid %d: %v", pid, err)
	}
	if err := unix.Stat(path, &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Fatalf("pid %d is not in the service network namespace %s", pid, path)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// standbySpec writes the OCI spec of the standby container on b to a file
// and returns the lower directories of its snapshot (the image's layers).
func standbySpec(ctx context.Context, t *testing.T, l *lab.Lab, id string) (string, []string) {
	t.Helper()
	out, err := l.Ctr(ctx, "b", "container", "info", id)
	if err != nil {
		t.Fatalf("container info: %v", err)
	}
	var info struct{ Spec json.RawMessage }
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Spec) == 0 {
		t.Fatalf("container info: %v: %.300s", err, out)
	}
	specFile := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(specFile, info.Spec, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = l.Ctr(ctx, "b", "snapshots", "mounts", "/mnt", id)
	if err != nil {
		t.Fatalf("snapshot mounts: %v", err)
	}
	var lower []string
	for _, f := range strings.Fields(out) {
		if strings.Contains(f, "lowerdir=") {
			if lower, err = shim.LowerDirsFromMountOptions(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(lower) == 0 {
		t.Fatalf("no lower dirs in %q", out)
	}
	return specFile, lower
}

// waitRunning waits until the container's task runs.
func waitRunning(ctx context.Context, t *testing.T, l *lab.Lab, id string) {
	t.Helper()
	err := lab.WaitFor(10*time.Second, func() error {
		out, err := l.Ctr(ctx, "a", "task", "ls")
		if err == nil && !strings.Contains(out, "RUNNING") {
			err = fmt.Errorf("task: %q", out)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // redis-server past its start-up
}

// TestBackupCrashLab crashes the backup host: the primary must notice
// (heartbeats), go degraded, release what it held and keep serving the
// client on the same connection, now unreplicated (no epoch wait).
func TestBackupCrashLab(t *testing.T) {
	for _, mode := range []replication.Mode{replication.ModeEpoch, replication.ModeHybrid} {
		t.Run(string(mode), func(t *testing.T) { testBackupCrash(t, mode) })
	}
}

func testBackupCrash(t *testing.T, mode replication.Mode) {
	r := startReplicatedRedis(t, mode, 0)
	if err := r.cl.Run(r.ctx, 10); err != nil {
		t.Fatalf("before the crash: %v", err)
	}
	crashAfter := 100 * time.Millisecond
	if mode == replication.ModeHybrid {
		crashAfter = 5 * time.Millisecond // ten rounds take a few milliseconds
	}
	go func() {
		time.Sleep(crashAfter)
		r.backup.killed.Store(true)
		if err := r.l.Crash(context.Background(), "b"); err != nil {
			t.Errorf("crash b: %v", err)
		}
	}()
	if err := r.cl.Run(r.ctx, 10); err != nil {
		t.Fatalf("across the backup's crash (connection must survive): %v", err)
	}
	st := r.primary.wait(t, "degraded", 10*time.Second, func(s helperStatus) bool {
		return s.Engine.State == replication.StateDegraded
	})

	if !strings.Contains(st.Engine.Reason, "backup") || st.Engine.Gate == nil || !st.Engine.Gate.PassThrough {
		t.Errorf("degraded status: reason %q, gate %+v", st.Engine.Reason, st.Engine.Gate)
	}
	n := len(r.cl.Lat)
	if err := r.cl.Run(r.ctx, 20); err != nil {
		t.Fatalf("degraded: %v", err)
	}
	var sum time.Duration
	for _, d := range r.cl.Lat[n:] {
		sum += d
	}
	mean := sum / time.Duration(len(r.cl.Lat)-n)
	if mean > 30*time.Millisecond {
		t.Errorf("degraded replies take %s on average: output still held?", mean)
	}
	if err := r.cl.Verify(); err != nil {
		t.Fatal(err)
	}
	t.Logf("backup crash: primary degraded (%s); replies while degraded: mean %s; longest reply %s",
		st.Engine.Reason, mean.Round(10*time.Microsecond), r.cl.Slowest.Round(time.Millisecond))
}
