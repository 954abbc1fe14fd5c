package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertest"
	"github.com/iorrc/rrc/shim"
	"github.com/iorrc/rrc/test/lab"
	"golang.org/x/sys/unix"
)

// TestReplicationThroughContainerd runs Redis replicated from lab host a to
// host b through containerd (ctr run --runtime io.rrc.v1 with io.rrc.*
// annotations), keeps one client connection busy, crashes a and checks that
// b's standby task becomes the restored container on the same connection.
//
// The shim under test is built from this tree and put first on each
// containerd's PATH (LAB_SHIM_PATH); each host's shim configuration file is
// passed as RRC_SHIM_CONFIG (LAB_SHIM_CONFIG).
func TestReplicationThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t)
	l, bin, dir, subnet := rl.l, rl.bin, rl.dir, rl.l.Subnet
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	const id = "r1"
	serviceIP := subnet + ".200"
	// Failure detection after 5 missed heartbeats (150 ms) rather than the
	// default 3 (90 ms): on this shared 2-core machine a busy moment can
	// delay a heartbeat past 90 ms, the primary then goes degraded and
	// closes the channel, and the backup rightly does not promote later.
	common := []string{"--annotation", "io.rrc.service-ip=" + serviceIP + "/24", "--annotation", "io.rrc.service-link=eth0",
		"--annotation", "io.rrc.heartbeat-misses=5"}

	// The backup first: a standby task, RUNNING, nothing running in it.
	b.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
		"--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen=" + l.IP("b") + ":7100",
		"--annotation", "io.rrc.peer-name=" + l.IP("a")}, common...), redis, id)...)
	if st := b.taskStatus(ctx, id); st != "RUNNING" {
		t.Fatalf("backup's standby task: %q, want RUNNING", st)
	}
	a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
		"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer=" + l.IP("b") + ":7100"}, common...), redis, id)...)
	inSync := func(s shim.PublishedStatus) bool { return s.Engine.State == replication.StateInSync }
	waitStatus(t, l, "a", id, "primary in sync", 30*time.Second, inSync)
	waitStatus(t, l, "b", id, "backup in sync", 10*time.Second, inSync)
	for _, h := range []string{"a", "b"} {
		out := rrcctl(t, l, bin, dir, h)
		t.Logf("rrcctl status on %s:\n%s", h, out)
		if !strings.Contains(out, "in-sync") {
			t.Errorf("rrcctl status on %s does not say in-sync:\n%s", h, out)
		}
	}

	time.Sleep(300 * time.Millisecond) // redis-server past its start-up
	nc, err := lab.DialInNetns(l.Netns("client"), serviceIP+":6379")
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	defer nc.Close()
	cl := lab.NewRedisWorkload(nc)
	if err := cl.Run(ctx, 25); err != nil {
		t.Fatalf("before the crash: %v", err)
	}
	crashed := make(chan time.Time, 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		crashed <- time.Now()
		if err := l.Crash(context.Background(), "a"); err != nil {
			t.Errorf("crash a: %v", err)
		}
	}()
	if err := cl.Run(ctx, 25); err != nil {
		t.Fatalf("across the failover (the connection must survive): %v", err)
	}
	crashAt := <-crashed
	after := waitStatus(t, l, "b", id, "promotion", 30*time.Second, func(s shim.PublishedStatus) bool {
		return s.Engine.State == replication.StatePrimaryAfterFailover
	})
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	f := after.Engine.Failover
	t.Logf("failover: restored epoch %d; detection %.1f ms, stop %.1f ms, prepare %.1f ms, restore %.1f ms, network %.1f ms, total %.1f ms; first reply %s after the crash; %d INCRs on one connection",
		f.Epoch, f.DetectionMS, f.StopMS, f.PrepareMS, f.RestoreMS, f.NetworkMS, f.TotalMS, cl.FirstReplyAfter(crashAt).Round(time.Millisecond), len(cl.Incrs))

	// containerd sees the restored process as the task.
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	lsOut := b.must(ctx, "task", "ls")
	if !taskLine(lsOut, id, rc.Pid, "RUNNING") {
		t.Errorf("ctr task ls on b does not show the restored pid %d RUNNING:\n%s", rc.Pid, lsOut)
	}
	out := rrcctl(t, l, bin, dir, "b")
	t.Logf("rrcctl status on b after the failover:\n%s", out)
	if !strings.Contains(out, "primary-after-failover") || !strings.Contains(out, "failover from epoch") {
		t.Errorf("rrcctl status on b after the failover:\n%s", out)
	}

	// kill, exit status, delete: nothing left.
	b.must(ctx, "task", "kill", "-s", "KILL", id)
	if err := lab.WaitFor(10*time.Second, func() error {
		if st := b.taskStatus(ctx, id); st != "STOPPED" {
			return fmt.Errorf("task %s", st)
		}
		return nil
	}); err != nil {
		t.Fatalf("restored task after kill: %v", err)
	}
	b.must(ctx, "task", "delete", id)
	b.must(ctx, "container", "delete", id)
	nothingLeft(t, l, "b", id)
}

// TestReplicatedLifecycleThroughContainerd: what happens around the
// failover: a host-network container is refused, a primary whose backup is
// unreachable starts (ctr run returns) but holds its output and says so,
// a backup's standby task can be killed and deleted, and deleting either
// leaves nothing behind.
func TestReplicatedLifecycleThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	serviceIP := l.Subnet + ".201"
	common := []string{"--annotation", "io.rrc.service-ip=" + serviceIP + "/24", "--annotation", "io.rrc.service-link=eth0"}

	t.Run("host network refused", func(t *testing.T) {
		a := host{t: t, lab: l, name: "a"}
		out, errOut, code := a.ctr(ctx, "", "run", "-d", "--net-host", "--runtime", rrc,
			"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer="+l.IP("b")+":7100", busybox, "rhost", "sleep", "60")
		if code == 0 || !strings.Contains(errOut, "io.rrc.role") || !strings.Contains(errOut, "host's network") {
			t.Errorf("ctr run --net-host of a primary: exit %d: %s%s", code, out, errOut)
		}
		a.cleanup("rhost")
		nothingLeft(t, l, "a", "rhost")
	})

	t.Run("primary without backup holds output", func(t *testing.T) {
		a := host{t: t, lab: l, name: "a"}
		start := time.Now()
		a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=primary",
			"--annotation", "io.rrc.peer=" + l.IP("b") + ":7199"}, common...), redis, "rnobackup")...)
		t.Logf("ctr run returned after %s", time.Since(start).Round(time.Millisecond))
		st := waitStatus(t, l, "a", "rnobackup", "reason", 10*time.Second, func(s shim.PublishedStatus) bool {
			return s.Engine.State == replication.StateStarting && strings.Contains(s.Engine.Reason, "output held")
		})
		t.Logf("status: %s: %s", st.Engine.State, st.Engine.Reason)
		if st := a.taskStatus(ctx, "rnobackup"); st != "RUNNING" {
			t.Errorf("task %q, want RUNNING", st)
		}
		time.Sleep(300 * time.Millisecond)
		if c, err := lab.DialInNetns(l.Netns("client"), serviceIP+":6379"); err == nil {
			// The SYN-ACK must be held: a connect that succeeds leaked output.
			c.Close()
			t.Errorf("connected to a primary whose output should be held")
		}
		out := rrcctl(t, l, rl.bin, rl.dir, "a")
		t.Logf("rrcctl status on a:\n%s", out)
		if !strings.Contains(out, "starting") || !strings.Contains(out, "waiting for the backup") {
			t.Errorf("rrcctl status does not tell why:\n%s", out)
		}
		a.must(ctx, "task", "kill", "-s", "KILL", "rnobackup")
		if err := lab.WaitFor(10*time.Second, func() error {
			if st := a.taskStatus(ctx, "rnobackup"); st != "STOPPED" {
				return fmt.Errorf("task %s", st)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		a.must(ctx, "task", "delete", "rnobackup")
		a.must(ctx, "container", "delete", "rnobackup")
		nothingLeft(t, l, "a", "rnobackup")
	})

	t.Run("standby task kill and delete", func(t *testing.T) {
		b := host{t: t, lab: l, name: "b"}
		b.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=backup",
			"--annotation", "io.rrc.listen=" + l.IP("b") + ":7101", "--annotation", "io.rrc.peer-name=" + l.IP("a")}, common...), redis, "rstandby")...)
		if st := b.taskStatus(ctx, "rstandby"); st != "RUNNING" {
			t.Fatalf("standby task %q, want RUNNING", st)
		}
		waitStatus(t, l, "b", "rstandby", "backup waiting", 10*time.Second, func(s shim.PublishedStatus) bool {
			return s.Engine.Role == replication.RoleBackup && s.Engine.State == replication.StateStarting
		})
		if out, errOut, code := b.ctr(ctx, "", "task", "exec", "--exec-id", "x", "rstandby", "true"); code == 0 || !strings.Contains(errOut, "backup") {
			t.Errorf("exec in a standby task: exit %d: %s%s", code, out, errOut)
		}
		b.must(ctx, "task", "kill", "-s", "TERM", "rstandby")
		if err := lab.WaitFor(10*time.Second, func() error {
			if st := b.taskStatus(ctx, "rstandby"); st != "STOPPED" {
				return fmt.Errorf("task %s", st)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b.must(ctx, "task", "delete", "rstandby")
		b.must(ctx, "container", "delete", "rstandby")
		nothingLeft(t, l, "b", "rstandby")
	})

	t.Run("dead shim cleaned up", func(t *testing.T) {
		a := host{t: t, lab: l, name: "a"}
		a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=primary",
			"--annotation", "io.rrc.peer=" + l.IP("b") + ":7199"}, common...), redis, "rdead")...)
		waitStatus(t, l, "a", "rdead", "status", 10*time.Second, func(s shim.PublishedStatus) bool { return true })
		pid, err := shimPid("rdead")
		if err != nil {
			t.Fatal(err)
		}
		// containerd sees the shim go and runs `containerd-shim-rrc-v1
		// delete`, which must remove what the dead shim left.
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitFor(10*time.Second, func() error {
			if _, err := os.Stat(shim.StatusFile(l.State("a")+"/rrc", l.Namespace("a"), "rdead")); !os.IsNotExist(err) {
				return fmt.Errorf("status file still there (%v)", err)
			}
			return nil
		}); err != nil {
			t.Fatalf("after the shim was killed: %v", err)
		}
		a.cleanup("rdead")
		nothingLeft(t, l, "a", "rdead")
	})
}

// shimPid is the pid of the shim serving container id.
func shimPid(id string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-rrc-v1") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				var pid int
				fmt.Sscan(e.Name(), &pid)
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no shim of %s", id)
}

// replicationLab is the lab of the replication tests: the shim under test
// built from this tree and put first on each containerd's PATH
// (LAB_SHIM_PATH), each host's shim configuration file passed as
// RRC_SHIM_CONFIG (LAB_SHIM_CONFIG), peer TLS for the hosts' addresses.
type replicationLab struct {
	l        *lab.Lab
	bin, dir string
}

func startReplicationLab(t *testing.T) replicationLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, bin := range []string{"criu", "runc", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s on PATH", bin)
		}
	}
	lab.Require(t)
	name, subnet := "rrcshim", "10.88.0"
	l0 := lab.New(name, subnet)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, c := range []string{"containerd-shim-rrc-v1", "rrcctl"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "github.com/iorrc/rrc/cmd/"+c).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	pki, err := peertest.GenerateTestPKI(filepath.Join(dir, "pki"), l0.IP("a"), l0.IP("b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a", "b"} {
		st := l0.State(h) + "/rrc"
		writeFile(t, filepath.Join(dir, h+".toml"), fmt.Sprintf(`state_dir = %q
image_dir = %q
checkpoint_dir = %q
criu_nice = 0

[peer_tls]
ca_file = %q
cert_file = %q
key_file = %q
`, st, st+"/images", st+"/checkpoints", pki.CAFile, pki.Hosts[l0.IP(h)].CertFile, pki.Hosts[l0.IP(h)].KeyFile))
	}
	t.Setenv("LAB_SHIM_PATH", bin)
	t.Setenv("LAB_SHIM_CONFIG", filepath.Join(dir, "@HOST@.toml"))
	t.Cleanup(func() { // runs after lab.Start's Down
		if left := lab.New(name, subnet).Leftovers(); len(left) > 0 {
			t.Errorf("left behind after lab down: %v", left)
		}
	})
	l := lab.Start(t, name, subnet)
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			for _, h := range []string{"a", "b"} {
				out, _ := exec.Command("sh", "-c", "grep -a 'id=r' "+l.Log(h)+" | grep -av 'level=debug' | tail -40").CombinedOutput()
				t.Logf("shim lines in the containerd log of %s (tail):\n%s", h, out)
			}
		}
	})
	return replicationLab{l: l, bin: bin, dir: dir}
}

// nothingLeft checks that host h keeps nothing of container id: status
// file, service network, work dirs, runc state of a restore, shim.
func nothingLeft(t *testing.T, l *lab.Lab, h, id string) {
	t.Helper()
	st := l.State(h) + "/rrc"
	if _, err := os.Stat(shim.StatusFile(st, l.Namespace(h), id)); !os.IsNotExist(err) {
		t.Errorf("%s: status file left after delete: %v", h, err)
	}
	for _, d := range []string{"netns", "work", "runc", "images", "checkpoints"} {
		p := filepath.Join(st, d, l.Namespace(h), id)
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: %s left after delete", h, p)
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), st+"/") {
		var left []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, st+"/") {
				left = append(left, line)
			}
		}
		t.Errorf("%s: mounts left under %s: %v", h, st, left)
	}
	if err := lab.WaitFor(5*time.Second, func() error { return shimGone(id) }); err != nil {
		t.Error(err)
	}
}

// taskLine: `ctr task ls` has a line "id pid status".
func taskLine(out, id string, pid int, status string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id && f[1] == fmt.Sprint(pid) && f[2] == status {
			return true
		}
	}
	return false
}

// waitStatus waits until host's shim publishes a status of id that satisfies cond.
func waitStatus(t *testing.T, l *lab.Lab, h, id, what string, timeout time.Duration, cond func(shim.PublishedStatus) bool) shim.PublishedStatus {
	t.Helper()
	path := shim.StatusFile(l.State(h)+"/rrc", l.Namespace(h), id)
	var last shim.PublishedStatus
	err := lab.WaitFor(timeout, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &last); err != nil {
			return err
		}
		if !cond(last) {
			return fmt.Errorf("state %s (%s)", last.Engine.State, last.Engine.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting on %s for %s: %v", h, what, err)
	}
	return last
}

func rrcctl(t *testing.T, l *lab.Lab, bin, dir, h string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "rrcctl"), "-address", l.Address(h), "-n", l.Namespace(h),
		"-config", filepath.Join(dir, h+".toml"), "status")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("rrcctl status on %s: %v\n%s", h, err, out)
	}
	return string(out)
}
