// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/iorrc/rrc/runtime/launch"
)

// The gate namespace sits between the container's namespace and the LAN:
// the container's eth0 is one end of a veth pair whose other end, GateInnerIf,
// is in a namespace of its own together with the uplink GateUplinkIf (a
// macvlan of the host link, or a veth into the host's bridge) that carries
// the service MAC. It forwards between the two (IPv4 routing with proxy ARP,
// no address of its own), so the packet gate can hold the container's output
// there: out of the container's reach, and after the veth has detached each
// packet from its socket, so that TCP Small Queues does not throttle a
// connection whose packets wait for an epoch (docs/NETFILTER.md).
const (
	GateInnerIf  = "ct0" // toward the container: its output enters here
	GateUplinkIf = "up0" // toward the LAN: its input enters here
	// gateSubdir holds the gate namespaces' bind mounts in Dir; container
	// names cannot start with a dot, so it never collides with one.
	gateSubdir = ".gate"
)

// Gate names the gate namespace of a service network.
type Gate struct {
	NetNS   string // path of the gate namespace
	InnerIf string // the container's output arrives on it
	Uplink  string // the clients' packets arrive on it
}

// Gate returns the gate namespace, or false for an adopted namespace,
// whose topology belongs to whoever made it: its traffic can only be held
// inside the container's namespace.
func (s *ServiceNetwork) Gate() (Gate, bool) {
	if s.gate == nil {
		return Gate{}, false
	}
	return Gate{NetNS: s.gate.path, InnerIf: GateInnerIf, Uplink: GateUplinkIf}, true
}

func gatePath(dir, name string) string { return filepath.Join(dir, gateSubdir, name) }

// gateNS is the gate namespace while the service network exists.
type gateNS struct {
	path    string
	handle  *netlink.Handle // bound to the gate namespace
	inner   int             // ifindex of GateInnerIf
	uplink  int             // ifindex of GateUplinkIf
	service *net.IPNet      // the service address, /32
	prefix  *net.IPNet      // the service prefix, reached through the uplink
}

// restoreRoute sends the service prefix to lo while the uplink is down,
// with the worst metric (restoreRouteMetric, as StandbyService's) so that the
// uplink's own route wins as soon as it exists.
// Its only use is proxy ARP: the kernel answers the restored container's
// ARP for a client only if it has a route to the client through another
// link. Without it the container's first packets wait in its neighbour
// queue for the next ARP attempt, a second later; with it they reach the
// gate, are held there, and are routed through the uplink once released.
func (g *gateNS) restoreRoute() (netlink.Route, error) {
	lo, err := g.handle.LinkByName("lo")
	if err != nil {
		return netlink.Route{}, fmt.Errorf("find lo in the gate namespace: %w", err)
	}
	return netlink.Route{LinkIndex: lo.Attrs().Index, Dst: g.prefix, Priority: restoreRouteMetric, Scope: netlink.SCOPE_LINK}, nil
}

// routes are what the gate forwards with: the service address to the
// container, the rest of its prefix to the LAN. The kernel deletes them when
// a link goes down, so Promote adds them after the links are up.
func (g *gateNS) routes() []netlink.Route {
	return []netlink.Route{
		{LinkIndex: g.inner, Dst: g.service, Scope: netlink.SCOPE_LINK},
		{LinkIndex: g.uplink, Dst: g.prefix, Scope: netlink.SCOPE_LINK},
	}
}

// gateSysctls configure the gate namespace before its links exist: it
// forwards IPv4 and has no IPv6 at all (the service is IPv4 only, and a
// family it does not forward cannot leak past the gate).
var gateSysctls = [][2]string{
	{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"},
	{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"},
	{"/proc/sys/net/ipv4/ip_forward", "1"},
}

// gateLinkSysctls make each gate link answer ARP for what lies behind the
// other one, with the link's own MAC (the service MAC on the uplink), at once:
// proxy_delay's default delays every answer to a broadcast request by up to
// 0.8 s, which a failover would pay.
func gateLinkSysctls(ifName string) [][2]string {
	return [][2]string{
		{"/proc/sys/net/ipv4/conf/" + ifName + "/proxy_arp", "1"},
		{"/proc/sys/net/ipv4/neigh/" + ifName + "/proxy_delay", "0"},
	}
}

func writeSysctls(nsPath string, kv [][2]string) error {
	return launch.InNetns(nsPath, func() error {
		for _, s := range kv {
			// /proc/sys/net is the namespace of the thread that opens it.
			if err := os.WriteFile(s[0], []byte(s[1]+"\n"), 0); err != nil {
				return fmt.Errorf("set %s=%s: %w", s[0], s[1], err)
			}
		}
		return nil
	})
}

// makeGate creates the gate namespace and its links: the veth pair to the
// container (eth0 there with the service MAC) and the uplink, a macvlan of
// the host link or, on a bridge, a veth whose host end (s.hostLink) is a
// port of the bridge. Every link is left down.
func (s *ServiceNetwork) makeGate(hostLink netlink.Link, isBridge bool, mac net.HardwareAddr, service *net.IPNet) error {
	path := s.gate.path
	// The directory is removed with its last namespace, possibly by
	// another container's Remove between the two steps: try again then.
	var err error
	for range 3 {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			if err = newNetnsFile(path); !errors.Is(err, os.ErrNotExist) {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("gate namespace: %w", err)
	}
	h, err := handleAt(path)
	if err != nil {
		return fmt.Errorf("gate namespace: %w", err)
	}
	s.gate.handle = h
	if err := writeSysctls(path, gateSysctls); err != nil {
		return fmt.Errorf("gate namespace: %w", err)
	}
	// Loopback up makes the kernel create the local routing table. Without
	// it every neighbour is typed broadcast (no local table to say
	// otherwise) and the gate sends the container's packets to
	// ff:ff:ff:ff:ff:ff without ARP, which eth0 does not take as its own.
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("gate namespace: find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("gate namespace: set lo up: %w", err)
	}
	mtu := hostLink.Attrs().MTU
	cns, err := netns.GetFromPath(s.nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", s.nsPath, err)
	}
	defer cns.Close()
	inner := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: GateInnerIf, MTU: mtu},
		PeerName:         ServiceIfName,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(cns)),
	}
	if err := h.LinkAdd(inner); err != nil {
		return fmt.Errorf("gate namespace: add veth %s/%s: %w", GateInnerIf, ServiceIfName, err)
	}
	gns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open gate namespace %s: %w", path, err)
	}
	defer gns.Close()
	host, err := handleAt(s.hostNetns)
	if err != nil {
		return err
	}
	defer host.Close()
	if isBridge {
		err = s.linkVeth(host, hostLink, GateUplinkIf, gns, mac)
	} else {
		err = linkMacvlan(host, hostLink, GateUplinkIf, gns, mac)
	}
	if err != nil {
		return fmt.Errorf("gate namespace: %w", err)
	}
	for _, name := range []string{GateInnerIf, GateUplinkIf} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("gate namespace: find %s: %w", name, err)
		}
		if name == GateInnerIf {
			s.gate.inner = l.Attrs().Index
		} else {
			s.gate.uplink = l.Attrs().Index
		}
		if err := writeSysctls(path, gateLinkSysctls(name)); err != nil {
			return fmt.Errorf("gate namespace: %w", err)
		}
	}
	s.gate.service = &net.IPNet{IP: service.IP.To4(), Mask: net.CIDRMask(32, 32)}
	s.gate.prefix = &net.IPNet{IP: service.IP.Mask(service.Mask), Mask: service.Mask}
	return nil
}

// InnerUp brings up the container's side of the gate namespace (eth0, its
// veth peer and the gate's route to the service address) and leaves the
// uplink down: for a restore on the backup, so that what the restored
// sockets send at once (CRIU's window probes, data) reaches the gate
// namespace, where the caller holds it until Promote, instead of being lost
// with the link down. Nothing reaches the LAN or comes from it. A no-op for
// an adopted namespace.
func (s *ServiceNetwork) InnerUp(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		return nil
	}
	if s.removed {
		return fmt.Errorf("service network %s: removed", s.name)
	}
	if err := s.gate.setUp(GateInnerIf, s.gate.inner); err != nil {
		return fmt.Errorf("service network %s: %w", s.name, err)
	}
	for _, l := range s.links {
		if err := s.handle.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: l.index}}); err != nil {
			return fmt.Errorf("service network %s: set %s up: %w", s.name, l.name, err)
		}
	}
	rs := s.gate.routes()
	if err := s.gate.handle.RouteReplace(&rs[0]); err != nil {
		return fmt.Errorf("service network %s: gate route %s: %w", s.name, rs[0].Dst, err)
	}
	rr, err := s.gate.restoreRoute()
	if err == nil {
		err = s.gate.handle.RouteReplace(&rr)
	}
	if err != nil {
		return fmt.Errorf("service network %s: gate restore route: %w", s.name, err)
	}
	return ctx.Err()
}
