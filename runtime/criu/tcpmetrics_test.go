// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/test/netnstest"
	"github.com/iorrc/rrc/test/prereq"
)

// TestPrimeTCPMetrics: in a namespace whose service address sits on a down
// link (a standby), priming leaves a metrics entry with an RTT for each
// (service, peer) pair, and nothing borrowed on lo.
func TestPrimeTCPMetrics(t *testing.T) {
	prereq.Commands(t, "ip")
	path := netnstest.Scratch(t)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	// eth0 stays down, as a standby's service interface does.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	eth0, _ := h.LinkByName("eth0")
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.98.0.200"), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	conns := []criuimage.TCPConn{
		{Local: netip.MustParseAddrPort("10.98.0.200:80"), Remote: netip.MustParseAddrPort("10.98.0.100:40000"), State: 1},
		{Local: netip.MustParseAddrPort("10.98.0.200:80"), Remote: netip.MustParseAddrPort("10.98.0.100:40001"), State: 1},
		{Local: netip.MustParseAddrPort("10.98.0.200:80"), Remote: netip.MustParseAddrPort("10.98.7.9:40002"), State: 1},
		{Local: netip.MustParseAddrPort("127.0.0.1:6379"), Remote: netip.MustParseAddrPort("127.0.0.1:40003"), State: 1},
	}
	n, err := PrimeTCPMetrics(path, conns)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("primed %d pairs, want 2 (one per peer address, loopback left out)", n)
	}
	out, err := exec.Command("nsenter", "--net="+path, "ip", "tcp_metrics", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip tcp_metrics: %v: %s", err, out)
	}
	t.Logf("ip tcp_metrics show:\n%s", out)
	for _, peer := range []string{"10.98.0.100", "10.98.7.9"} {
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, peer+" ") && strings.Contains(line, " rtt ") && strings.Contains(line, "source 10.98.0.200") {
				found = true
			}
		}
		if !found {
			t.Errorf("no metrics entry with an RTT for 10.98.0.200 -> %s", peer)
		}
	}
	addrs, _ := h.AddrList(lo, netlink.FAMILY_V4)
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			t.Errorf("address %s left on lo", a.IPNet)
		}
	}
}
