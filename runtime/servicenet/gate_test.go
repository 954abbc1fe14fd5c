// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/iorrc/rrc/runtime/launch"
)

// TestGateForwards: a client on the LAN reaches a service whose eth0 is a
// veth to the gate namespace, both ways, with the service MAC; the
// container's namespace holds nothing but lo and eth0.
func TestGateForwards(t *testing.T) {
	host := newTestHost(t)
	host.addVethPair(t, "lan0", "wire0")
	// The client: wire0 moved into a namespace of its own.
	client := scratchNetns(t, t.TempDir(), "client")
	hh := testHandle(t, host.netns)
	ch := testHandle(t, client)
	if err := hh.LinkSetNsFd(mustLink(t, hh, "wire0"), int(openNs(t, client))); err != nil {
		t.Fatal(err)
	}
	wire := mustLink(t, ch, "wire0")
	if err := ch.AddrAdd(wire, &netlink.Addr{IPNet: cidr(t, "10.99.0.100/24")}); err != nil {
		t.Fatal(err)
	}
	mustUp(t, ch, "wire0")
	mustUp(t, ch, "lo")

	cfg := Settings{Address: cidr(t, "10.99.0.204/24"), Link: "lan0"}
	sn := createT(t, "c5", cfg, false, host.opts(t))
	var ln net.Listener
	if err := launch.InNetns(sn.NetnsPath(), func() (err error) { ln, err = net.Listen("tcp", "10.99.0.204:7000"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // an echo until the test closes
		}
	}()
	var c net.Conn
	if err := launch.InNetns(client, func() (err error) { c, err = net.DialTimeout("tcp", "10.99.0.204:7000", 2*time.Second); return }); err != nil {
		t.Fatalf("client -> service through the gate: %v", err)
	}
	defer c.Close()
	msg := strings.Repeat("x", 100000)
	go c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the gate: %v", err)
	}
	neighs, err := ch.NeighList(wire.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	mac := DeriveMAC(cfg.Address.IP)
	found := false
	for _, n := range neighs {
		if n.IP.Equal(cfg.Address.IP) {
			found = n.HardwareAddr.String() == mac.String()
			t.Logf("client's neighbour entry: %s %s", n.IP, n.HardwareAddr)
		}
	}
	if !found {
		t.Errorf("client's neighbour entry for %s is not the service MAC %s", cfg.Address.IP, mac)
	}
	for _, kv := range tcpSysctls {
		var got []byte
		if err := launch.InNetns(sn.NetnsPath(), func() (err error) { got, err = os.ReadFile(kv[0]); return }); err != nil || strings.TrimSpace(string(got)) != kv[1] {
			t.Errorf("%s in the container's namespace: %q (%v), want %s", kv[0], got, err, kv[1])
		}
	}
	links, err := testHandle(t, sn.NetnsPath()).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != ServiceIfName {
			t.Errorf("unexpected link %s in the container's namespace", n)
		}
	}
}

func openNs(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// TestInnerUp: on a standby, InnerUp brings the container's side of the
// gate up and leaves the uplink down; the container's ARP for a client is
// answered by the gate (so that its first packets reach the gate at once,
// where the caller holds them); Promote then routes the prefix through the
// uplink and drops the route through lo.
func TestInnerUp(t *testing.T) {
	host := newTestHost(t)
	host.addVethPair(t, "lan0", "wire0")
	cfg := Settings{Address: cidr(t, "10.99.0.205/24"), Link: "lan0"}
	sn := createT(t, "c6", cfg, true, host.opts(t))
	g, _ := sn.Gate()
	gh, sh := testHandle(t, g.NetNS), testHandle(t, sn.NetnsPath())
	if err := sn.InnerUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !isUp(mustLink(t, sh, ServiceIfName)) || !isUp(mustLink(t, gh, g.InnerIf)) || isUp(mustLink(t, gh, g.Uplink)) {
		t.Fatalf("after InnerUp: eth0 up %v, %s up %v, %s up %v; want up, up, down", isUp(mustLink(t, sh, ServiceIfName)),
			g.InnerIf, isUp(mustLink(t, gh, g.InnerIf)), g.Uplink, isUp(mustLink(t, gh, g.Uplink)))
	}
	// The container sends to a client: its ARP is answered by the gate.
	if err := launch.InNetns(sn.NetnsPath(), func() error {
		c, err := net.Dial("udp4", "10.99.0.100:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	inner := mustLink(t, gh, g.InnerIf).Attrs().HardwareAddr.String()
	var got string
	for i := 0; i < 100 && got != inner; i++ {
		time.Sleep(10 * time.Millisecond)
		neighs, _ := sh.NeighList(mustLink(t, sh, ServiceIfName).Attrs().Index, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.String() == "10.99.0.100" && n.HardwareAddr != nil {
				got = n.HardwareAddr.String()
			}
		}
	}
	if got != inner {
		t.Fatalf("the container's neighbour entry for a client is %q, want the gate's %s (proxy ARP during the restore)", got, inner)
	}
	if _, err := sn.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	routes, err := gh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	uplink := mustLink(t, gh, g.Uplink).Attrs().Index
	var prefix []string
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == "10.99.0.0/24" {
			prefix = append(prefix, fmt.Sprintf("dev %d metric %d", r.LinkIndex, r.Priority))
			if r.LinkIndex != uplink {
				t.Errorf("after Promote the gate still routes the prefix through ifindex %d (metric %d)", r.LinkIndex, r.Priority)
			}
		}
	}
	if len(prefix) != 1 {
		t.Errorf("gate routes to the prefix after Promote: %v, want one through %s", prefix, g.Uplink)
	}
}
