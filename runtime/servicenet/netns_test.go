// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/prereq"
)

// testHost is a scratch "host" network namespace with a LAN to attach to.
type testHost struct {
	netns string
	dir   string // Options.Dir for service networks
}

func newTestHost(t *testing.T) testHost {
	t.Helper()
	requireRoot(t)
	tmp := t.TempDir()
	h := testHost{netns: scratchNetns(t, tmp, "host"), dir: filepath.Join(tmp, "servicenet")}
	releaseAtCleanup(t, h.dir)
	ns := threadNetns(t)
	t.Cleanup(func() { checkThreadsNetns(t, ns) })
	return h
}

func (h testHost) opts(t *testing.T) Options {
	return Options{Dir: h.dir, HostNetns: h.netns, Logger: testLogger(t)}
}

// addBridge makes an up bridge in the host namespace.
func (h testHost) addBridge(t *testing.T, name string) {
	t.Helper()
	nh := testHandle(t, h.netns)
	if err := nh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	mustUp(t, nh, name)
}

// addVethPair makes an up veth pair a <-> b in the host namespace: a stands
// for the host's LAN link, b for the rest of the LAN.
func (h testHost) addVethPair(t *testing.T, a, b string) {
	t.Helper()
	nh := testHandle(t, h.netns)
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	mustUp(t, nh, a)
	mustUp(t, nh, b)
}

func createT(t *testing.T, name string, cfg Settings, standby bool, opts Options) *ServiceNetwork {
	t.Helper()
	sn, err := Create(t.Context(), name, cfg, standby, opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := sn.Remove(context.Background()); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	return sn
}

// checkServiceIf checks eth0 in the container namespace: MAC, address, and
// whether it is up.
func checkServiceIf(t *testing.T, sn *ServiceNetwork, mac net.HardwareAddr, addr string, up bool) {
	t.Helper()
	h := testHandle(t, sn.NetnsPath())
	l := mustLink(t, h, ServiceIfName)
	if got := l.Attrs().HardwareAddr.String(); got != mac.String() {
		t.Errorf("%s MAC = %s, want %s", ServiceIfName, got, mac)
	}
	if isUp(l) != up {
		t.Errorf("%s up = %v, want %v", ServiceIfName, isUp(l), up)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != addr {
		t.Errorf("%s addresses = %v (%v), want %s", ServiceIfName, addrs, err, addr)
	}
	if lo := mustLink(t, h, "lo"); !isUp(lo) {
		t.Error("lo is down")
	}
	checkMPTCPOff(t, sn.NetnsPath())
}

// checkMPTCPOff: net.mptcp.enabled is 0 in the namespace at path (CRIU
// cannot dump MPTCP sockets), and still what it was in this one.
func checkMPTCPOff(t *testing.T, path string) {
	t.Helper()
	own, err := os.ReadFile(mptcpSysctl)
	if os.IsNotExist(err) {
		return // no MPTCP in this kernel
	}
	var in []byte
	if err := launch.InNetns(path, func() (err error) { in, err = os.ReadFile(mptcpSysctl); return err }); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(in)) != "0" {
		t.Errorf("net.mptcp.enabled in the service namespace = %q, want 0", in)
	}
	if now, _ := os.ReadFile(mptcpSysctl); string(now) != string(own) {
		t.Errorf("net.mptcp.enabled of the test's own namespace changed: %q → %q", own, now)
	}
}

func TestVethOnBridge(t *testing.T) {
	host := newTestHost(t)
	host.addBridge(t, "br0")
	capture := captureARP(t, host.netns, "br0")
	cfg := Settings{Address: cidr(t, "10.99.0.200/24"), Link: "br0"}
	mac := DeriveMAC(cfg.Address.IP)

	sn := createT(t, "c1", cfg, true, host.opts(t))
	hh := testHandle(t, host.netns)
	hostEnd := mustLink(t, hh, sn.HostLink())
	if hostEnd.Attrs().Alias != hostLinkAlias(sn.NetnsPath()) {
		t.Errorf("host end alias %q, want our mark", hostEnd.Attrs().Alias)
	}
	if hostEnd.Type() != "veth" || hostEnd.Attrs().MasterIndex != mustLink(t, hh, "br0").Attrs().Index {
		t.Fatalf("host end %s: type %s master %d, want a veth in br0", sn.HostLink(), hostEnd.Type(), hostEnd.Attrs().MasterIndex)
	}
	if isUp(hostEnd) {
		t.Error("standby: host end is up")
	}
	checkServiceIf(t, sn, mac, "10.99.0.200/24", false)
	if !sn.Standby() || !slices.Equal(sn.Links(), []string{ServiceIfName}) {
		t.Errorf("Standby %v Links %v", sn.Standby(), sn.Links())
	}
	if frames := capture.collect(t, 50*time.Millisecond); len(frames) > 0 {
		t.Errorf("standby copy sent ARP: %v", frames)
	}

	// Promote from another goroutine: nothing depends on the caller's thread.
	type result struct {
		tm  PromoteTimings
		err error
	}
	ch := make(chan result)
	go func() { tm, err := sn.Promote(t.Context()); ch <- result{tm, err} }()
	r := <-ch
	if r.err != nil {
		t.Fatalf("Promote: %v", r.err)
	}
	t.Logf("veth promote: link up %v, running %v, first GARP %v", r.tm.LinkUp, r.tm.Running, r.tm.FirstGARP)
	checkServiceIf(t, sn, mac, "10.99.0.200/24", true)
	if !isUp(mustLink(t, hh, sn.HostLink())) {
		t.Error("promoted: host end is down")
	}
	checkGARP(t, capture.collect(t, 300*time.Millisecond), mac, cfg.Address.IP, 2, 3)

	if err := sn.Remove(t.Context()); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := sn.Remove(t.Context()); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := hh.LinkByName(sn.HostLink()); err == nil {
		t.Errorf("host end %s left behind", sn.HostLink())
	}
	checkNothingLeft(t, host.dir)
	if _, err := sn.Promote(t.Context()); err == nil {
		t.Error("Promote after Remove succeeded")
	}
}

func TestMacvlan(t *testing.T) {
	host := newTestHost(t)
	host.addVethPair(t, "lan0", "wire0")
	capture := captureARP(t, host.netns, "wire0")
	mac, _ := net.ParseMAC("02:aa:00:00:00:01")
	cfg := Settings{Address: cidr(t, "10.99.0.201/24"), MAC: mac, Link: "lan0"}

	// Not standby: up and announced by Create itself.
	sn := createT(t, "c2", cfg, false, host.opts(t))
	if sn.HostLink() != "" {
		t.Errorf("macvlan has a host end %q", sn.HostLink())
	}
	// eth0 is a veth to the gate namespace, whose uplink is the macvlan
	// with the service MAC.
	if l := mustLink(t, testHandle(t, sn.NetnsPath()), ServiceIfName); l.Type() != "veth" {
		t.Fatalf("%s is %s, want a veth to the gate namespace", ServiceIfName, l.Type())
	}
	g, ok := sn.Gate()
	if !ok {
		t.Fatal("no gate namespace")
	}
	gh := testHandle(t, g.NetNS)
	l := mustLink(t, gh, g.Uplink)
	mv, ok := l.(*netlink.Macvlan)
	if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.Attrs().HardwareAddr.String() != mac.String() || !isUp(l) {
		t.Fatalf("gate uplink %s is %s (%T), want an up macvlan in bridge mode with %s", g.Uplink, l.Type(), l, mac)
	}
	if l := mustLink(t, gh, g.InnerIf); l.Type() != "veth" || !isUp(l) {
		t.Fatalf("gate link %s is %s, want an up veth", g.InnerIf, l.Type())
	}
	routes, err := gh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.Dst.String())
	}
	if !slices.Contains(got, "10.99.0.201/32") || !slices.Contains(got, "10.99.0.0/24") {
		t.Errorf("gate routes %v, want 10.99.0.201/32 to the container and 10.99.0.0/24 to the LAN", got)
	}
	checkServiceIf(t, sn, mac, "10.99.0.201/24", true)
	checkGARP(t, capture.collect(t, 300*time.Millisecond), mac, cfg.Address.IP, 2, 3)
	// The host namespace sees nothing of it.
	links, _ := testHandle(t, host.netns).LinkList()
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != "lan0" && n != "wire0" {
			t.Errorf("unexpected link %s in the host namespace", n)
		}
	}
	if err := sn.Remove(t.Context()); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	checkNothingLeft(t, host.dir)
}

func TestCreateFailsCleanly(t *testing.T) {
	host := newTestHost(t)
	cfg := Settings{Address: cidr(t, "10.99.0.202/24"), Link: "nosuch0"}
	if _, err := Create(t.Context(), "c3", cfg, true, host.opts(t)); err == nil {
		t.Fatal("Create on a missing link succeeded")
	}
	checkNothingLeft(t, host.dir)

	// A failure after the namespace exists (the veth's host name is
	// taken) undoes everything.
	host.addBridge(t, "br0")
	cfg.Link = "br0"
	squatter := vethHostName(filepath.Join(host.dir, "c4"))
	host.addVethPair(t, squatter, "sq1")
	if _, err := Create(t.Context(), "c4", cfg, true, host.opts(t)); err == nil {
		t.Fatal("Create with a taken host link name succeeded")
	} else {
		t.Logf("expected failure: %v", err)
	}
	checkNothingLeft(t, host.dir)
	mustLink(t, testHandle(t, host.netns), squatter) // not ours: left alone

	// A name that is taken is refused, and the holder is left alone.
	sn := createT(t, "c3", cfg, true, host.opts(t))
	if _, err := Create(t.Context(), "c3", cfg, true, host.opts(t)); err == nil {
		t.Fatal("second Create of c3 succeeded")
	}
	if !isNsfsMount(sn.NetnsPath()) {
		t.Fatal("the failed second Create removed the first one's namespace")
	}
}

func TestAdopt(t *testing.T) {
	host := newTestHost(t)
	// A namespace made by someone else (CNI): eth0 up with an address,
	// its peer in the host namespace.
	cni := scratchNetns(t, filepath.Dir(host.netns), "cni")
	hh := testHandle(t, host.netns)
	cniNs := testHandle(t, cni)
	ns, err := os.Open(cni)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns.Fd()))}); err != nil {
		t.Fatal(err)
	}
	mustUp(t, hh, "cni0")
	eth0 := mustLink(t, cniNs, "eth0")
	if err := cniNs.AddrAdd(eth0, &netlink.Addr{IPNet: cidr(t, "10.99.1.5/24")}); err != nil {
		t.Fatal(err)
	}
	mustUp(t, cniNs, "eth0")
	mustUp(t, cniNs, "lo")
	// What CNI adds besides: a default route through eth0, an IPv6 address
	// and a route through it. Setting eth0 down for the standby makes the
	// kernel delete the routes (and the IPv6 address); Promote must bring
	// them back.
	if err := cniNs.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.1.1")}); err != nil {
		t.Fatal(err)
	}
	if err := cniNs.AddrAdd(eth0, &netlink.Addr{IPNet: cidr(t, "fd00:99::5/64"), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	if err := cniNs.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: cidr(t, "fd00:98::/64"), Gw: net.ParseIP("fd00:99::1")}); err != nil {
		t.Fatal(err)
	}
	cniRoutes := func() string {
		var out []string
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := cniNs.RouteList(eth0, fam)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Gw != nil {
					out = append(out, fmt.Sprintf("%v via %v", r.Dst, r.Gw))
				}
			}
			as, err := cniNs.AddrList(eth0, fam)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range as {
				if !a.IP.IsLinkLocalUnicast() {
					out = append(out, a.IPNet.String())
				}
			}
		}
		sort.Strings(out)
		return strings.Join(out, ", ")
	}
	before := cniRoutes()
	if !strings.Contains(before, "via 10.99.1.1") || !strings.Contains(before, "fd00:98::/64 via fd00:99::1") {
		t.Fatalf("CNI's routes not set up: %s", before)
	}
	capture := captureARP(t, host.netns, "cni0")

	sn, err := Adopt(t.Context(), cni, true, host.opts(t))
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	t.Cleanup(func() {
		if err := sn.Remove(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if !sn.Adopted() || !slices.Equal(sn.Links(), []string{"eth0"}) {
		t.Fatalf("Adopted %v Links %v", sn.Adopted(), sn.Links())
	}
	if isUp(mustLink(t, cniNs, "eth0")) {
		t.Error("standby: adopted eth0 is up")
	}
	if !isUp(mustLink(t, cniNs, "lo")) {
		t.Error("Adopt set lo down")
	}
	checkMPTCPOff(t, cni)
	if _, err := sn.Promote(t.Context()); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	if !isUp(mustLink(t, cniNs, "eth0")) {
		t.Error("promoted: adopted eth0 is down")
	}
	if after := cniRoutes(); after != before {
		t.Errorf("promoted: addresses and routes %s, want %s as before the standby", after, before)
	}
	checkGARP(t, capture.collect(t, 300*time.Millisecond), eth0.Attrs().HardwareAddr, net.ParseIP("10.99.1.5"), 2, 3)
	if err := sn.Remove(t.Context()); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	// The namespace belongs to CNI: Remove leaves it and its interface.
	if !isNsfsMount(cni) {
		t.Error("Remove of an adopted namespace unmounted it")
	}
	mustLink(t, cniNs, "eth0")
}

func TestCleanupStale(t *testing.T) {
	host := newTestHost(t)
	host.addBridge(t, "br0")
	opts := host.opts(t)
	live := createT(t, "live", Settings{Address: cidr(t, "10.99.0.210/24"), Link: "br0"}, true, opts)
	dead := createT(t, "dead", Settings{Address: cidr(t, "10.99.0.211/24"), Link: "br0"}, false, opts)

	// Make "dead" look like it belongs to a process that is gone.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	rp := recordPath(host.dir, "dead")
	r, err := readRecord(rp)
	if err != nil {
		t.Fatal(err)
	}
	r.PID = cmd.Process.Pid
	if err := writeRecord(rp, r); err != nil {
		t.Fatal(err)
	}
	// A namespace file without a record, and a corrupt record alone.
	if err := newNetnsFile(filepath.Join(host.dir, "orphan")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recordPath(host.dir, "corrupt"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}

	removed, err := CleanupStale(t.Context(), host.dir, testLogger(t))
	if err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	slices.Sort(removed)
	if !slices.Equal(removed, []string{"corrupt", "dead", "orphan"}) {
		t.Errorf("removed %v, want [corrupt dead orphan]", removed)
	}
	hh := testHandle(t, host.netns)
	if _, err := hh.LinkByName(dead.HostLink()); err == nil {
		t.Errorf("stale veth end %s left behind", dead.HostLink())
	}
	mustLink(t, hh, live.HostLink())
	if !isNsfsMount(live.NetnsPath()) {
		t.Error("CleanupStale removed a live owner's namespace")
	}
	// The owner of "dead" (here, still this process) finds it gone and
	// Remove still succeeds.
	if err := dead.Remove(t.Context()); err != nil {
		t.Errorf("Remove after CleanupStale: %v", err)
	}
	if err := live.Remove(t.Context()); err != nil {
		t.Errorf("Remove: %v", err)
	}
	checkNothingLeft(t, host.dir)
	if removed, err := CleanupStale(t.Context(), filepath.Join(host.dir, "missing"), nil); err != nil || len(removed) > 0 {
		t.Errorf("CleanupStale of a missing dir: %v %v", removed, err)
	}
}

// TestNetnsOwnTCPHash: a namespace newNetnsFile makes has a TCP hash table
// of its own (tcp_ehash_entries is negative for one sharing the host's),
// and the host's setting for new namespaces is left as it was.
func TestNetnsOwnTCPHash(t *testing.T) {
	requireRoot(t)
	const child = "/proc/sys/net/ipv4/tcp_child_ehash_entries"
	before, err := os.ReadFile(child)
	if os.IsNotExist(err) {
		prereq.Missing(t, "net.ipv4.tcp_child_ehash_entries (kernel 6.1): without it namespaces share the host's table")
	}
	if err != nil {
		t.Fatal(err)
	}
	p := scratchNetns(t, t.TempDir(), "own")
	var entries []byte
	if err := launch.InNetns(p, func() (err error) {
		entries, err = os.ReadFile("/proc/sys/net/ipv4/tcp_ehash_entries")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(entries)); got != fmt.Sprint(tcpHashBuckets) {
		t.Errorf("tcp_ehash_entries in the new namespace = %s, want %d (its own table)", got, tcpHashBuckets)
	}
	after, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("%s changed from %q to %q", child, before, after)
	}
}
