// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// nerdctlBin is where make setup installs nerdctl
// (contrib/setup/frontends/20-nerdctl.sh); cniBin holds its CNI plugins.
const (
	nerdctlBin = "/opt/rrc/nerdctl/bin/nerdctl"
	cniBin     = "/opt/cni/bin"
	// cniState is the CNI plugins' machine-wide state (host-local's
	// address allocations, the results cache), shared by the lab's hosts.
	cniState = "/var/lib/cni"
)

// TestNerdctlFailover replicates Redis started with nerdctl run --runtime
// io.rrc.v1 on a nerdctl macvlan network of each lab host's eth0, with the
// same --ip and --mac-address on both: nerdctl's OCI hook makes the network
// (CNI) in the namespace the shim made for it, on b from the shim's own
// call of the hook on the standby. A client keeps a connection busy across
// the crash of a; then nerdctl ps on b shows the restored process, nerdctl
// rm -f removes it, the CNI address is released and nothing is left.
func TestNerdctlFailover(t *testing.T) {
	prereq.Path(t, nerdctlBin, "nerdctl, installed by make setup (contrib/setup/frontends/20-nerdctl.sh)")
	prereq.Path(t, filepath.Join(cniBin, "macvlan"), "the CNI plugins, installed by make setup (contrib/setup/frontends/10-cni.sh)")
	prereq.Commands(t, "unshare", "nsenter")
	rl := startReplicationLab(t, "rrcnerd", "10.101.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := nerdctlHost{t: t, lab: l, name: "a"}, nerdctlHost{t: t, lab: l, name: "b"}
	// nerdctl's container IDs are random and 64 characters long: the pair
	// is named (io.rrc.pair, here the container's name), the same on both hosts.
	const name = "nredis"
	serviceIP, mac := l.Subnet+".212", "02:42:0a:65:00:d4"
	for _, h := range []nerdctlHost{a, b} {
		h.createNetwork(ctx)
	}
	listen := l.IP("b") + ":7100"
	run := func(h nerdctlHost, name, ip string, annotations ...string) string {
		args := []string{"run", "-d", "--runtime", rrc, "--name", name, "--network", h.network(),
			"--ip", ip, "--mac-address", mac, "--cap-drop", "NET_RAW", "--cap-drop", "NET_ADMIN",
			"--annotation", "io.rrc.pair=" + name}
		for _, an := range annotations {
			args = append(args, "--annotation", an)
		}
		return strings.TrimSpace(h.must(ctx, append(args, redis)...))
	}

	// Deleted without a failover, primary first (a goodbye: b does not
	// take over), then b's standby task: nerdctl's poststop hook releases
	// each host's address (runc's on a, the shim's on b), nothing is left.
	const early = "nearly"
	earlyIP := l.Subnet + ".213"
	earlyB := run(b, early, earlyIP, "io.rrc.role=backup", "io.rrc.listen="+l.IP("b")+":7101", "io.rrc.peer-name="+l.IP("a"))
	earlyA := run(a, early, earlyIP, "io.rrc.role=primary", "io.rrc.peer="+l.IP("b")+":7101")
	waitStatus(t, l, "b", earlyB, "backup in sync", 30*time.Second, isState(replication.StateInSync))
	for _, h := range []nerdctlHost{a, b} {
		h.must(ctx, "rm", "-f", early)
		if _, err := os.Stat(filepath.Join(cniState, "networks", h.network(), earlyIP)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s's CNI address allocation of %s after nerdctl rm -f: %v", h.name, earlyIP, err)
		}
	}
	nothingLeft(t, l, "a", earlyA)
	nothingLeft(t, l, "b", earlyB)

	idB := run(b, name, serviceIP, "io.rrc.role=backup", "io.rrc.listen="+listen, "io.rrc.peer-name="+l.IP("a"))
	if st := (host{t: t, lab: l, name: "b"}).taskStatus(ctx, idB); st != "RUNNING" {
		t.Fatalf("backup's standby task: %q, want RUNNING", st)
	}
	// The hook made b's copy of the network, and the shim keeps it down.
	sn := waitStatus(t, l, "b", idB, "backup's status", 10*time.Second, func(s status.Published) bool { return s.Engine.Role == replication.RoleBackup })
	if out := ipAt(t, sn.Netns, "-br", "addr", "show", "eth0"); !strings.Contains(out, serviceIP+"/24") || !strings.Contains(out, "DOWN") {
		t.Fatalf("standby: b's eth0 should carry %s and be down:\n%s", serviceIP, out)
	}
	idA := run(a, name, serviceIP, "io.rrc.role=primary", "io.rrc.peer="+listen)
	waitStatus(t, l, "a", idA, "primary in sync", 30*time.Second, isState(replication.StateInSync))
	waitStatus(t, l, "b", idB, "backup in sync", 10*time.Second, isState(replication.StateInSync))
	for _, h := range []string{"a", "b"} {
		if out := rrcctl(t, l, rl.bin, rl.dir, h); !strings.Contains(out, "in-sync") {
			t.Errorf("rrcctl status on %s:\n%s", h, out)
		}
	}

	cl := redisClient(ctx, t, l, serviceIP+":6379", 20)
	after := failOverLogged(ctx, t, l, l.Namespace("b"), idB, cl)

	// nerdctl sees the restored process as its container.
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	if out := b.must(ctx, "ps", "--format", "{{.Names}} {{.Status}}"); !strings.Contains(out, name+" Up") {
		t.Errorf("nerdctl ps on b after the failover:\n%s", out)
	}
	if pid := strings.TrimSpace(b.must(ctx, "inspect", "--format", "{{.State.Pid}}", name)); pid != strconv.Itoa(rc.Pid) {
		t.Errorf("nerdctl inspect on b: pid %s, want the restored %d", pid, rc.Pid)
	}
	allocated := filepath.Join(cniState, "networks", b.network(), serviceIP)
	if _, err := os.Stat(allocated); err != nil {
		t.Errorf("b's CNI address allocation: %v", err)
	}
	b.must(ctx, "rm", "-f", name)
	if out := b.must(ctx, "ps", "-a", "--format", "{{.Names}}"); strings.Contains(out, name) {
		t.Errorf("nerdctl ps -a on b after rm -f still lists %s:\n%s", name, out)
	}
	// runc delete ran the spec's poststop hook: nerdctl released the address.
	if _, err := os.Stat(allocated); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b's CNI address allocation %s after nerdctl rm: %v", allocated, err)
	}
	nothingLeft(t, l, "b", idB)
}

// nerdctlHost runs nerdctl against lab host name's containerd, with a data
// root and CNI configuration of that host's own, in its network namespace:
// the CNI networks hang off its eth0.
type nerdctlHost struct {
	t    *testing.T
	lab  *lab.Lab
	name string
}

func (h nerdctlHost) globalArgs() []string {
	st := h.lab.State(h.name)
	return []string{"--address", h.lab.Address(h.name), "--namespace", h.lab.Namespace(h.name),
		"--data-root", filepath.Join(st, "nerdctl"), "--cni-netconfpath", filepath.Join(st, "cni"), "--cni-path", cniBin}
}

// network is the name of the host's macvlan network. Per host: CNI's
// host-local allocations live machine-wide under cniState, by network name.
func (h nerdctlHost) network() string { return h.lab.Name + "-svc-" + h.name }

// must runs nerdctl in the host's network namespace and fails the test
// unless it exits 0; it returns stdout.
func (h nerdctlHost) must(ctx context.Context, args ...string) string {
	h.t.Helper()
	return h.mustRun(h.lab.Command(ctx, h.name, append(append([]string{nerdctlBin}, h.globalArgs()...), args...)...))
}

func (h nerdctlHost) mustRun(cmd *exec.Cmd) string {
	h.t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("%s on %s: %v\n%s%s", strings.Join(cmd.Args, " "), h.name, err, out.String(), errb.String())
	}
	return out.String()
}

// createNetwork makes the host's macvlan network on its eth0, in the lab's
// subnet, and removes CNI's state of it at the end of the test (a crashed
// host never releases its address). nerdctl network create refuses a
// subnet that an interface of the network namespace it runs in has,
// macvlan or not: it runs in an empty one (unshare --net), as README says;
// it only writes the configuration file.
func (h nerdctlHost) createNetwork(ctx context.Context) {
	h.t.Helper()
	h.t.Cleanup(func() {
		os.RemoveAll(filepath.Join(cniState, "networks", h.network()))
		results, _ := filepath.Glob(filepath.Join(cniState, "results", h.network()+"-*"))
		for _, r := range results {
			os.Remove(r)
		}
	})
	cmd := exec.CommandContext(ctx, "unshare", append(append([]string{"--net", nerdctlBin}, h.globalArgs()...), "network", "create", "-d", "macvlan", "-o", "parent=eth0",
		"--subnet", h.lab.Subnet+".0/24", "--gateway", h.lab.Subnet+".254", h.network())...)
	h.mustRun(cmd)
}

// ipAt runs ip in the network namespace at path (a bind mount anywhere).
func ipAt(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + path, "--", "ip"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s in %s: %v\n%s", strings.Join(args, " "), path, err, out)
	}
	return string(out)
}
