// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls/pki"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
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
	rl := startReplicationLab(t, "rrcshim", "10.88.0")
	l, bin, dir, subnet := rl.l, rl.bin, rl.dir, rl.l.Subnet
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := host{t: t, lab: l, name: "b"}
	const id = "r1"
	serviceIP := subnet + ".200"
	eventsA, eventsB := watchEvents(ctx, t, l, "a"), watchEvents(ctx, t, l, "b")
	metricsB := serveMetrics(t, l, bin, dir, "b")
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: serviceIP, listen: l.IP("b") + ":7100"})

	cl := redisClient(ctx, t, l, serviceIP+":6379", 25)
	after := failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)

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
	if !strings.Contains(out, "primary-after-failover") || !strings.Contains(out, "failover from epoch") || !strings.Contains(out, "unfenced") {
		t.Errorf("rrcctl status on b after the failover:\n%s", out)
	}
	checkOperatorViews(ctx, t, rl, id, eventsA, eventsB, metricsB)

	// The restored container is a runc task like any other: exec runs
	// (TestRestoredTaskThroughContainerd goes through the other calls).
	if out, errOut, code := b.ctr(ctx, "", "task", "exec", "--exec-id", "x1", id, "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("ctr task exec on the restored task: exit %d (%s%s), want the exec's own 7", code, out, errOut)
	}

	// kill, exit status, delete: nothing left.
	if code := b.killAndDelete(ctx, id, "KILL"); code != 128+9 {
		t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
	}
	nothingLeft(t, l, "b", id)
}

// pairSpec is a container replicated from lab host a to lab host b.
type pairSpec struct {
	id, image string
	serviceIP string   // without prefix length; the lab's /24
	listen    string   // the backup's io.rrc.listen, host:port
	extra     []string // more ctr run arguments for both sides (annotations)
	args      []string // the container's command, if not the image's
}

// annotations are the ctr run arguments both sides of p share.
func (p pairSpec) annotations() []string {
	return append([]string{"--annotation", "io.rrc.service-ip=" + p.serviceIP + "/24",
		"--annotation", "io.rrc.service-link=eth0"}, p.extra...)
}

// startPair starts p through containerd the way a user would: the backup's
// standby task on b first (RUNNING, nothing running in it), then the
// primary on a; it waits until both sides say in-sync, in their status
// files and in rrcctl status.
func (rl replicationLab) startPair(ctx context.Context, t *testing.T, p pairSpec) {
	t.Helper()
	l := rl.l
	a := host{t: t, lab: l, name: "a"}
	rl.startBackup(ctx, t, p)
	a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
		"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer=" + p.listen}, p.annotations()...), append([]string{p.image, p.id}, p.args...)...)...)
	inSync := func(s status.Published) bool { return s.Engine.State == replication.StateInSync }
	waitStatus(t, l, "a", p.id, "primary in sync", 30*time.Second, inSync)
	waitStatus(t, l, "b", p.id, "backup in sync", 10*time.Second, inSync)
	for _, h := range []string{"a", "b"} {
		out := rrcctl(t, l, rl.bin, rl.dir, h)
		t.Logf("rrcctl status on %s:\n%s", h, out)
		if !rrcctlSays(out, p.id, "in-sync") {
			t.Errorf("rrcctl status on %s does not say %s is in-sync:\n%s", h, p.id, out)
		}
	}
}

// startBackup starts p's backup on b through containerd (ctr run): its
// standby task must be RUNNING, with nothing running in it.
func (rl replicationLab) startBackup(ctx context.Context, t *testing.T, p pairSpec) {
	t.Helper()
	b := host{t: t, lab: rl.l, name: "b"}
	b.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc,
		"--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen=" + p.listen,
		"--annotation", "io.rrc.peer-name=" + rl.l.IP("a")}, p.annotations()...), append([]string{p.image, p.id}, p.args...)...)...)
	if st := b.taskStatus(ctx, p.id); st != "RUNNING" {
		t.Fatalf("backup's standby task: %q, want RUNNING", st)
	}
}

// imageRefused starts p's backup on b with p.image and its primary on a
// with primaryImage, another image: the primary must refuse the backup in
// the handshake, hold its output and commit nothing, the backup commit
// nothing either; both are then deleted. It returns the primary's status,
// whose reason says why.
func (rl replicationLab) imageRefused(ctx context.Context, t *testing.T, p pairSpec, primaryImage string) status.Published {
	t.Helper()
	l := rl.l
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	t.Cleanup(func() { a.cleanup(p.id); b.cleanup(p.id) })
	rl.startBackup(ctx, t, p)
	a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=primary",
		"--annotation", "io.rrc.peer=" + p.listen}, p.annotations()...), primaryImage, p.id)...)
	st := waitStatus(t, l, "a", p.id, "refusal of the backup's image", 10*time.Second, func(s status.Published) bool {
		return strings.Contains(s.Engine.Reason, "both must run the same image")
	})
	t.Logf("%s on a: %s: %s", p.id, st.Engine.State, st.Engine.Reason)
	if !strings.Contains(st.Engine.Reason, "output held") || st.Engine.CommittedEpoch != 0 {
		t.Errorf("status does not say the output is held, or something was committed: %+v", st.Engine)
	}
	if bs := waitStatus(t, l, "b", p.id, "backup", time.Second, func(status.Published) bool { return true }); bs.Engine.CommittedEpoch != 0 ||
		bs.Engine.State == replication.StateInSync {
		t.Errorf("the backup of another image committed something: %+v", bs.Engine)
	}
	for _, h := range []host{a, b} {
		if code := h.killAndDelete(ctx, p.id, "KILL"); code != 128+9 {
			t.Errorf("exit status on %s: %d, want %d", h.name, code, 128+9)
		}
		nothingLeft(t, l, h.name, p.id)
	}
	return st
}

// rrcctlSays: rrcctl status has a table line for id with word in it.
func rrcctlSays(out, id, word string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == id && slices.Contains(f, word) {
			return true
		}
	}
	return false
}

// killAndDelete signals id's task on h, waits until it is STOPPED, deletes
// task and container and returns the task's exit status (waitDeleted).
func (h host) killAndDelete(ctx context.Context, id, signal string) int {
	h.t.Helper()
	h.must(ctx, "task", "kill", "-s", signal, id)
	if err := lab.WaitFor(10*time.Second, func() error {
		if st := h.taskStatus(ctx, id); st != "STOPPED" {
			return fmt.Errorf("task %s", st)
		}
		return nil
	}); err != nil {
		h.t.Fatalf("task %s on %s after kill -s %s: %v", id, h.name, signal, err)
	}
	return h.waitDeleted(ctx, id)
}

// waitDeleted deletes the STOPPED task id and its container and returns
// the task's exit status (ctr task delete warns "task ID exit with non-zero
// exit code N", and says nothing for 0).
func (h host) waitDeleted(ctx context.Context, id string) int {
	h.t.Helper()
	out, errOut, code := h.ctr(ctx, "", "task", "delete", id)
	if code != 0 {
		h.t.Fatalf("ctr task delete %s on %s: exit %d: %s%s", id, h.name, code, out, errOut)
	}
	status := 0
	if m := nonZeroExit.FindStringSubmatch(errOut); m != nil {
		if _, err := fmt.Sscan(m[1], &status); err != nil {
			h.t.Fatalf("ctr task delete %s on %s: exit status %q: %v", id, h.name, m[1], err)
		}
	}
	h.must(ctx, "container", "delete", id)
	return status
}

var nonZeroExit = regexp.MustCompile(`exit with non-zero exit code (\d+)`)

// TestReplicatedLifecycleThroughContainerd: what happens around the
// failover: a host-network container is refused, a primary whose backup is
// unreachable starts (ctr run returns) but holds its output and says so,
// a backup's standby task can be killed and deleted, and deleting either
// leaves nothing behind.
func TestReplicatedLifecycleThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t, "rrcshim", "10.88.0")
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
		st := waitStatus(t, l, "a", "rnobackup", "reason", 10*time.Second, func(s status.Published) bool {
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
		a.killAndDelete(ctx, "rnobackup", "KILL")
		nothingLeft(t, l, "a", "rnobackup")
	})

	t.Run("standby task kill and delete", func(t *testing.T) {
		b := host{t: t, lab: l, name: "b"}
		b.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=backup",
			"--annotation", "io.rrc.listen=" + l.IP("b") + ":7101", "--annotation", "io.rrc.peer-name=" + l.IP("a")}, common...), redis, "rstandby")...)
		if st := b.taskStatus(ctx, "rstandby"); st != "RUNNING" {
			t.Fatalf("standby task %q, want RUNNING", st)
		}
		waitStatus(t, l, "b", "rstandby", "backup waiting", 10*time.Second, func(s status.Published) bool {
			return s.Engine.Role == replication.RoleBackup && s.Engine.State == replication.StateStarting
		})
		if out, errOut, code := b.ctr(ctx, "", "task", "exec", "--exec-id", "x", "rstandby", "true"); code == 0 || !strings.Contains(errOut, "backup") {
			t.Errorf("exec in a standby task: exit %d: %s%s", code, out, errOut)
		}
		b.killAndDelete(ctx, "rstandby", "TERM")
		nothingLeft(t, l, "b", "rstandby")
	})

	t.Run("dead shim cleaned up", func(t *testing.T) {
		a := host{t: t, lab: l, name: "a"}
		a.must(ctx, append(append([]string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=primary",
			"--annotation", "io.rrc.peer=" + l.IP("b") + ":7199"}, common...), redis, "rdead")...)
		waitStatus(t, l, "a", "rdead", "status", 10*time.Second, func(s status.Published) bool { return true })
		pid := findShim(l.Namespace("a"), "rdead")
		if pid == 0 {
			t.Fatal("no shim of rdead")
		}
		// containerd sees the shim go and runs `containerd-shim-rrc-v1
		// delete`, which must remove what the dead shim left.
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The shim library's socket: sha256 of address/namespace/id.
		socket := fmt.Sprintf("/run/containerd/s/%x", sha256.Sum256([]byte(filepath.Join(l.Address("a"), l.Namespace("a"), "rdead"))))
		if _, err := os.Stat(socket); err != nil {
			t.Fatalf("the shim's socket is not where expected: %v", err)
		}
		if err := lab.WaitFor(10*time.Second, func() error {
			if _, err := os.Stat(status.File(l.State("a")+"/rrc", l.Namespace("a"), "rdead")); !os.IsNotExist(err) {
				return fmt.Errorf("status file still there (%v)", err)
			}
			if _, err := os.Stat(socket); !os.IsNotExist(err) {
				return fmt.Errorf("the dead shim's socket is still there (%v)", err)
			}
			return nil
		}); err != nil {
			t.Fatalf("after the shim was killed: %v", err)
		}
		a.cleanup("rdead")
		nothingLeft(t, l, "a", "rdead")
	})
}

// replicationLab is the lab of the replication tests: the shim under test
// built from this tree and put first on each containerd's PATH
// (LAB_SHIM_PATH), each host's shim configuration file passed as
// RRC_SHIM_CONFIG (LAB_SHIM_CONFIG), peer TLS for the hosts' addresses.
type replicationLab struct {
	l        *lab.Lab
	bin, dir string
	pki      *pki.PKI
}

// startReplicationLab brings up the lab name (subnet): every test that
// uses it must choose a name and subnet of its own, since several labs run
// on one machine at once.
func startReplicationLab(t *testing.T, name, subnet string) replicationLab {
	t.Helper()
	return startReplicationLabWith(t, lab.New(name, subnet))
}

// startReplicationLabWith is startReplicationLab for a lab of the caller's:
// with l0.Witness, the lab has its etcd (LAB_WITNESS=1) and every host's
// shim configuration names it with leases of 1 s (docs/FENCING.md); with
// l0.Registry, its registry (LAB_REGISTRY=1).
func startReplicationLabWith(t *testing.T, l0 *lab.Lab) replicationLab {
	t.Helper()
	prereq.Root(t, "the lab")
	prereq.Commands(t, "criu", "runc", "iptables")
	lab.Require(t)
	name, subnet := l0.Name, l0.Subnet
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, c := range []string{"containerd-shim-rrc-v1", "rrcctl"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "github.com/iorrc/rrc/cmd/"+c).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	// The client's certificate is one of the same CA for another host: a
	// peer the shims must refuse.
	certs, err := pki.Generate(filepath.Join(dir, "pki"), l0.IP("a"), l0.IP("b"), l0.IP("client"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a", "b"} {
		st := l0.State(h) + "/rrc"
		conf := fmt.Sprintf(`state_dir = %q
image_dir = %q
checkpoint_dir = %q
criu_nice = 0

[peer_tls]
ca_file = %q
cert_file = %q
key_file = %q
`, st, st+"/images", st+"/checkpoints", certs.CAFile, certs.Hosts[l0.IP(h)].CertFile, certs.Hosts[l0.IP(h)].KeyFile)
		if l0.Witness {
			conf += fmt.Sprintf(`
[witness]
endpoints = ["http://%s:2379", "http://%s:2379", "http://%s:2379"]
lease_ttl_seconds = 1
name = %q
`, l0.IP("a"), l0.IP("b"), l0.IP(lab.WitnessHost), h)
		}
		writeFile(t, filepath.Join(dir, h+".toml"), conf)
	}
	t.Setenv("LAB_SHIM_PATH", bin)
	t.Setenv("LAB_SHIM_CONFIG", filepath.Join(dir, "@HOST@.toml"))
	t.Cleanup(func() { // runs after lab.Start's Down
		if left := lab.New(name, subnet).Leftovers(); len(left) > 0 {
			t.Errorf("left behind after lab down: %v", left)
		}
	})
	l := lab.StartLab(t, l0)
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			for _, h := range []string{"a", "b"} {
				out, _ := exec.Command("sh", "-c", "grep -a ' id=' "+l.Log(h)+" | grep -av 'level=debug' | tail -40").CombinedOutput()
				t.Logf("shim lines in the containerd log of %s (tail):\n%s", h, out)
			}
		}
	})
	return replicationLab{l: l, bin: bin, dir: dir, pki: certs}
}

// nothingLeft checks that host h keeps nothing of container id: status
// file, service network, work dirs, runc state of a restore, shim.
func nothingLeft(t *testing.T, l *lab.Lab, h, id string) {
	t.Helper()
	nothingLeftIn(t, l, h, l.Namespace(h), id)
}

// nothingLeftIn is nothingLeft for a container of containerd namespace ns.
func nothingLeftIn(t *testing.T, l *lab.Lab, h, ns, id string) {
	t.Helper()
	st := l.State(h) + "/rrc"
	if _, err := os.Stat(status.File(st, ns, id)); !os.IsNotExist(err) {
		t.Errorf("%s: status file left after delete: %v", h, err)
	}
	for _, d := range []string{"netns", "work", "runc", "images", "checkpoints"} {
		p := filepath.Join(st, d, ns, id)
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: %s left after delete", h, p)
		}
	}
	// Mounts of this container (its service netns, image tmpfs, restore
	// rootfs): other containers of the host may still run.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var left []string
		for _, line := range strings.Split(string(b), "\n") {
			for _, d := range []string{"netns", "work", "runc", "images", "checkpoints"} {
				p := filepath.Join(st, d, ns, id)
				if strings.Contains(line, p+"/") || strings.Contains(line, p+" ") {
					left = append(left, line)
					break
				}
			}
		}
		if len(left) > 0 {
			t.Errorf("%s: mounts of %s left under %s: %v", h, id, st, left)
		}
	}
	if err := lab.WaitFor(5*time.Second, func() error { return shimGone(ns, id) }); err != nil {
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
func waitStatus(t *testing.T, l *lab.Lab, h, id, what string, timeout time.Duration, cond func(status.Published) bool) status.Published {
	t.Helper()
	return waitStatusIn(t, l, h, l.Namespace(h), id, what, timeout, cond)
}

// waitStatusIn is waitStatus for a container of containerd namespace ns.
func waitStatusIn(t *testing.T, l *lab.Lab, h, ns, id, what string, timeout time.Duration, cond func(status.Published) bool) status.Published {
	t.Helper()
	path := status.File(l.State(h)+"/rrc", ns, id)
	var last status.Published
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

// crashDuring crashes lab host h after delay while run (the clients'
// traffic) goes on; it returns when the crash began.
func crashDuring(t *testing.T, l *lab.Lab, h string, delay time.Duration, run func()) time.Time {
	t.Helper()
	crashed := make(chan time.Time, 1)
	go func() {
		time.Sleep(delay)
		crashed <- time.Now() // the links are cut first thing
		if err := l.Crash(context.Background(), h); err != nil {
			t.Errorf("crash %s: %v", h, err)
		}
	}()
	run()
	return <-crashed
}

// failOver crashes host a while cl keeps its connection to id's service
// busy, waits until b has promoted, runs cl on and verifies every reply:
// the connection must survive, nothing acknowledged may be lost.
func failOver(ctx context.Context, t *testing.T, l *lab.Lab, id string, cl *lab.RedisWorkload) (status.Published, time.Time) {
	t.Helper()
	return failOverIn(ctx, t, l, l.Namespace("b"), id, cl)
}

// failOverIn is failOver for b's container id of containerd namespace ns.
func failOverIn(ctx context.Context, t *testing.T, l *lab.Lab, ns, id string, cl *lab.RedisWorkload) (status.Published, time.Time) {
	t.Helper()
	crashAt := crashDuring(t, l, "a", 150*time.Millisecond, func() {
		if err := cl.Run(ctx, 25); err != nil {
			t.Fatalf("across the failover (the connection must survive): %v", err)
		}
	})
	after := waitStatusIn(t, l, "b", ns, id, "promotion", 30*time.Second, isState(replication.StatePrimaryAfterFailover))
	if err := cl.Run(ctx, 10); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Fatal(err)
	}
	return after, crashAt
}

// redisClient connects a Redis client from the lab's client host to addr,
// once redis-server is past its start-up, and runs rounds on it.
func redisClient(ctx context.Context, t *testing.T, l *lab.Lab, addr string, rounds int) *lab.RedisWorkload {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // redis-server past its start-up
	nc, err := lab.DialInNetns(l.Netns("client"), addr)
	if err != nil {
		t.Fatalf("client connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	cl := lab.NewRedisWorkload(nc)
	if err := cl.Run(ctx, rounds); err != nil {
		t.Fatalf("first %d rounds: %v", rounds, err)
	}
	return cl
}

// failOverLogged is failOverIn, with the failover's figures logged.
func failOverLogged(ctx context.Context, t *testing.T, l *lab.Lab, ns, id string, cl *lab.RedisWorkload) status.Published {
	t.Helper()
	after, crashAt := failOverIn(ctx, t, l, ns, id, cl)
	f := after.Engine.Failover
	t.Logf("failover: restored epoch %d; detection %.1f ms, stop %.1f ms, prepare %.1f ms, restore %.1f ms, network %.1f ms, total %.1f ms; first reply %s after the crash; %d INCRs on one connection",
		f.Epoch, f.DetectionMS, f.StopMS, f.PrepareMS, f.RestoreMS, f.NetworkMS, f.TotalMS, cl.FirstReplyAfter(crashAt).Round(time.Millisecond), len(cl.Incrs))
	return after
}

// waitPromoted waits until b's shim says id was promoted.
func waitPromoted(t *testing.T, l *lab.Lab, id string) status.Published {
	t.Helper()
	return waitStatus(t, l, "b", id, "promotion", 30*time.Second, isState(replication.StatePrimaryAfterFailover))
}

func rrcctl(t *testing.T, l *lab.Lab, bin, dir, h string) string {
	t.Helper()
	return rrcctlIn(t, l, bin, dir, h, l.Namespace(h))
}

// rrcctlIn is rrcctl status for containerd namespace ns.
func rrcctlIn(t *testing.T, l *lab.Lab, bin, dir, h, ns string) string {
	t.Helper()
	out, err := rrcctlRun(l, bin, dir, h, ns, "status")
	if err != nil {
		t.Errorf("rrcctl status on %s: %v\n%s", h, err, out)
	}
	return out
}

// rrcctlRun runs rrcctl args against host h's containerd, namespace ns,
// with h's shim configuration; it returns the combined output.
func rrcctlRun(l *lab.Lab, bin, dir, h, ns string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "rrcctl"), append([]string{"-address", l.Address(h), "-n", ns,
		"-config", filepath.Join(dir, h+".toml")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
