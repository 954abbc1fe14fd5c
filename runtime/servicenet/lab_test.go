// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/lab"
)

// This package's lab (docs/LAB.md): its own name and subnet so that it
// runs beside the other packages' labs.
func startLab(t *testing.T) *lab.Lab {
	name, subnet := os.Getenv("SERVICENET_LAB"), os.Getenv("SERVICENET_LAB_SUBNET")
	if name == "" {
		name = "rrcsn"
	}
	if subnet == "" {
		subnet = "10.85.0"
	}
	return lab.Start(t, name, subnet)
}

const servicePort = 7000

// serveIdentity listens on the service address inside the service network
// and answers every connection with host's name; it stands for the
// replicated container on that host.
func serveIdentity(t *testing.T, sn *ServiceNetwork, ip, host string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := launch.InNetns(sn.NetnsPath(), func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(servicePort)))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", sn.NetnsPath(), err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, host)
			c.Close()
		}
	}()
	return ln
}

// askIdentity connects from the lab client to ip and returns the name the
// server answers with.
func askIdentity(nsPath, ip string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := launch.InNetns(nsPath, func() error {
		var err error
		c, err = net.DialTimeout("tcp", net.JoinHostPort(ip, fmt.Sprint(servicePort)), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// clientNeighbour is the client's neighbour entry for ip.
func clientNeighbour(t *testing.T, h *netlink.Handle, ip net.IP) (net.HardwareAddr, bool) {
	t.Helper()
	ns, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("client neighbours: %v", err)
	}
	for _, n := range ns {
		if n.IP.Equal(ip) && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr, true
		}
	}
	return nil, false
}

// fdbPorts lists the LAN bridge ports on which mac has been learned.
func fdbPorts(t *testing.T, h *netlink.Handle, mac net.HardwareAddr) []string {
	t.Helper()
	entries, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("bridge forwarding table: %v", err)
	}
	var ports []string
	for _, e := range entries {
		if e.HardwareAddr.String() != mac.String() {
			continue
		}
		if l, err := h.LinkByIndex(e.LinkIndex); err == nil {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

// TestFailoverInLab: a service network on lab host a serves the client; the
// same one on b waits in standby and is never seen; a crashes; b is
// promoted and the client reaches the service on b at the same IP and MAC.
func TestFailoverInLab(t *testing.T) {
	requireRoot(t)
	l := startLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	startNs := threadNetns(t)
	t.Cleanup(func() { checkThreadsNetns(t, startNs) })

	ip := net.ParseIP(l.ServiceIP(0))
	cfg := Settings{Address: &net.IPNet{IP: ip, Mask: net.CIDRMask(l.Prefix(), 32)}, Link: "eth0"}
	mac := DeriveMAC(ip)
	// Under each host's state dir, so that crash and down find it (docs/LAB.md).
	dirA, dirB := filepath.Join(l.State("a"), "servicenet"), filepath.Join(l.State("b"), "servicenet")
	releaseAtCleanup(t, dirB)
	optsA := Options{Dir: dirA, HostNetns: l.Netns("a"), Logger: testLogger(t).With("host", "a")}
	optsB := Options{Dir: dirB, HostNetns: l.Netns("b"), Logger: testLogger(t).With("host", "b")}

	snA := createT(t, "svc", cfg, false, optsA)
	snB := createT(t, "svc", cfg, true, optsB)
	lnA := serveIdentity(t, snA, ip.String(), "a")
	serveIdentity(t, snB, ip.String(), "b")

	client := testHandle(t, l.Netns("client"))
	lan := testHandle(t, l.Netns("lan"))
	clientEth := mustLink(t, client, "eth0")
	// The client resolves the service address afresh; only a may answer.
	_ = client.NeighDel(&netlink.Neigh{LinkIndex: clientEth.Attrs().Index, IP: ip})
	capture := captureARP(t, l.Netns("client"), "eth0")
	if who, err := askIdentity(l.Netns("client"), ip.String(), 2*time.Second); err != nil || who != "a" {
		t.Fatalf("client -> %s before failover: %q, %v; want a", ip, who, err)
	}
	// Replies to the client's own request (not a's gratuitous ones).
	replies := 0
	for _, f := range capture.collect(t, 100*time.Millisecond) {
		if f.op == arpReply && f.senderIP.Equal(ip) && f.targetIP.Equal(net.ParseIP(l.IP("client"))) {
			replies++
			if f.senderHW.String() != mac.String() {
				t.Errorf("ARP reply for %s from %s, want %s", ip, f.senderHW, mac)
			}
		}
	}
	if replies != 1 {
		t.Errorf("client got %d ARP replies for %s, want exactly 1 (from a)", replies, ip)
	}
	if got, ok := clientNeighbour(t, client, ip); !ok || got.String() != mac.String() {
		t.Errorf("client's neighbour entry for %s = %s, want %s", ip, got, mac)
	}
	if ports := fdbPorts(t, lan, mac); len(ports) != 1 || ports[0] != "a" {
		t.Errorf("LAN learned %s on ports %v, want [a]", mac, ports)
	}
	bEth := mustLink(t, testHandle(t, snB.NetnsPath()), ServiceIfName)
	if isUp(bEth) || bEth.Attrs().Statistics.TxPackets != 0 {
		t.Errorf("standby eth0 on b: up %v, %d packets sent; want down and silent", isUp(bEth), bEth.Attrs().Statistics.TxPackets)
	}

	// Fail-stop a: links cut first, then its processes killed. The server
	// on a dies with it (its sockets can send nothing: the link is gone).
	if err := l.Crash(ctx, "a"); err != nil {
		t.Fatalf("crash a: %v", err)
	}
	lnA.Close()

	start := time.Now()
	tm, err := snB.Promote(ctx)
	promoted := time.Since(start)
	if err != nil {
		t.Fatalf("Promote on b: %v", err)
	}
	if tm.FirstGARP == 0 {
		t.Error("Promote on b sent no gratuitous ARP")
	}
	// The LAN has learned where the MAC is now from b's announcement,
	// before any client traffic.
	if err := lab.WaitFor(time.Second, func() error {
		if ports := fdbPorts(t, lan, mac); len(ports) != 1 || ports[0] != "b" {
			return fmt.Errorf("LAN learned %s on ports %v after promotion, want [b]", mac, ports)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	var connected time.Duration
	attempts := 0
	for {
		attempts++
		who, err := askIdentity(l.Netns("client"), ip.String(), 200*time.Millisecond)
		if err == nil && who == "b" {
			connected = time.Since(start)
			break
		}
		if ctx.Err() != nil || time.Since(start) > 10*time.Second {
			t.Fatalf("client cannot reach %s on b after promotion: %q, %v", ip, who, err)
		}
	}
	t.Logf("failover figures: link up %v, carrier %v, first GARP %v, Promote returned %v, first successful connection %v after Promote (%d attempts)",
		tm.LinkUp, tm.Running, tm.FirstGARP, promoted, connected, attempts)
	if got, ok := clientNeighbour(t, client, ip); !ok || got.String() != mac.String() {
		t.Errorf("client's neighbour entry for %s after failover = %s, want %s", ip, got, mac)
	}

	// Remove: nothing of either copy is left.
	nsIno := netnsInode(t, snB.NetnsPath())
	if err := snA.Remove(ctx); err != nil {
		t.Errorf("Remove on crashed a: %v", err)
	}
	if err := snB.Remove(ctx); err != nil {
		t.Fatalf("Remove on b: %v", err)
	}
	checkNothingLeft(t, dirA)
	checkNothingLeft(t, dirB)
	links, err := testHandle(t, l.Netns("b")).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, lk := range links {
		if n := lk.Attrs().Name; n != "lo" && n != "eth0" {
			t.Errorf("link %s left in b's namespace", n)
		}
	}
	checkNetnsUnreferenced(t, nsIno)
	if who, err := askIdentity(l.Netns("client"), ip.String(), 300*time.Millisecond); err == nil {
		t.Errorf("service still answers after Remove (%q)", who)
	}
}

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// checkNetnsUnreferenced asserts that no mount, file descriptor or thread
// of this process refers to the namespace with inode ino any more (the
// test's own listener sockets are closed at cleanup).
func checkNetnsUnreferenced(t *testing.T, ino uint64) {
	t.Helper()
	want := fmt.Sprintf("net:[%d]", ino)
	for _, glob := range []string{"/proc/self/fd/*", "/proc/self/task/*/ns/net"} {
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			if l, err := os.Readlink(p); err == nil && l == want {
				t.Errorf("%s still refers to the removed namespace", p)
			}
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, want) {
			t.Errorf("mount of the removed namespace left: %s", line)
		}
	}
}
