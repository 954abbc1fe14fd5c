// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/test/lab"
)

// TestAdoptedNetnsThroughContainerd replicates a container whose network
// namespace someone else made, as CNI does for nerdctl or Kubernetes: on
// each host a namespace with a macvlan of the host's eth0, the same service
// address, each its own MAC, and a default route, given to ctr run with
// --with-ns and no io.rrc.service-ip. The backup's shim keeps its copy down
// until the failover; then the client's connection carries on (the
// gratuitous ARP moves it to b's MAC) and b's namespace has its route back.
func TestAdoptedNetnsThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t, "rrccni", "10.93.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	const id = "cni1"
	serviceIP := l.Subnet + ".210"
	gateway := l.Subnet + ".254"
	ns := map[string]string{}
	for _, h := range []string{"a", "b"} {
		ns[h] = cniNetns(t, l, h, serviceIP, gateway)
	}
	listen := l.IP("b") + ":7100"
	// The gate sits inside an adopted namespace: containerd's default
	// CAP_NET_RAW would let the container go around it, and is refused.
	b.must(ctx, "run", "-d", "--runtime", rrc, "--with-ns", "network:"+ns["b"], "--cap-drop", "CAP_NET_RAW",
		"--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen="+listen,
		"--annotation", "io.rrc.peer-name="+l.IP("a"), redis, id)
	if st := b.taskStatus(ctx, id); st != "RUNNING" {
		t.Fatalf("backup's standby task: %q, want RUNNING", st)
	}
	if out := ipIn(t, ns["b"], "link", "show", "eth0"); strings.Contains(out, ",UP") {
		t.Fatalf("standby: b's adopted eth0 is up:\n%s", out)
	}
	a.must(ctx, "run", "-d", "--runtime", rrc, "--with-ns", "network:"+ns["a"], "--cap-drop", "CAP_NET_RAW",
		"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer="+listen, redis, id)
	waitStatus(t, l, "a", id, "primary in sync", 30*time.Second, isState(replication.StateInSync))
	waitStatus(t, l, "b", id, "backup in sync", 10*time.Second, isState(replication.StateInSync))

	cl := redisClient(ctx, t, l, serviceIP+":6379", 20)
	failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)
	if out := ipIn(t, ns["b"], "route", "show", "default"); !strings.Contains(out, "via "+gateway) {
		t.Errorf("b's adopted namespace after the failover has no default route via %s: %q", gateway, out)
	}
	if code := b.killAndDelete(ctx, id, "KILL"); code != 128+9 {
		t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
	}
	nothingLeft(t, l, "b", id)
	// The namespace is CNI's: the shim leaves it and its interface.
	if out := ipIn(t, ns["b"], "link", "show", "eth0"); !strings.Contains(out, "eth0") {
		t.Errorf("b's adopted eth0 is gone after delete: %q", out)
	}
}

// cniNetns makes what a CNI macvlan plugin would for a container on lab
// host h: a named network namespace with eth0, a macvlan of h's eth0 (a
// MAC of its own), with ip/24 and a default route via gw. Removed at the
// end of the test.
func cniNetns(t *testing.T, l *lab.Lab, h, ip, gw string) string {
	t.Helper()
	name := l.Name + "-cni-" + h
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	run("-n", l.NetnsName(h), "link", "add", "link", "eth0", "name", "cni-"+h, "type", "macvlan", "mode", "bridge")
	run("-n", l.NetnsName(h), "link", "set", "cni-"+h, "netns", name)
	run("-n", name, "link", "set", "cni-"+h, "name", "eth0")
	run("-n", name, "addr", "add", ip+"/24", "dev", "eth0")
	run("-n", name, "link", "set", "eth0", "up")
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "route", "add", "default", "via", gw, "dev", "eth0")
	return "/run/netns/" + name
}

// ipIn runs ip in the network namespace at path (/run/netns/NAME).
func ipIn(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", strings.TrimPrefix(path, "/run/netns/")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s in %s: %v\n%s", strings.Join(args, " "), path, err, out)
	}
	return string(out)
}
