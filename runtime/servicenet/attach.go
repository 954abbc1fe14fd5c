// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"fmt"
	"hash/fnv"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// findHostLink looks up the host link in the host namespace and reports
// whether it is a bridge.
func findHostLink(hostNetns, name string) (netlink.Link, bool, error) {
	h, err := handleAt(hostNetns)
	if err != nil {
		return nil, false, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, false, fmt.Errorf("find host link %s in %s: %w", name, hostNetns, err)
	}
	return l, l.Type() == "bridge", nil
}

// linkMacvlan makes the uplink name as a macvlan (bridge mode: several
// containers on one host link reach each other) of the host link, created
// directly in the namespace ns so that the host never sees it and its name
// is checked there.
func linkMacvlan(h *netlink.Handle, parent netlink.Link, name string, ns netns.NsHandle, mac net.HardwareAddr) error {
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         name,
			ParentIndex:  parent.Attrs().Index,
			HardwareAddr: mac,
			Namespace:    netlink.NsFd(int(ns)),
		},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := h.LinkAdd(mv); err != nil {
		return fmt.Errorf("add macvlan %s on %s: %w", name, parent.Attrs().Name, err)
	}
	return nil
}

// linkVeth makes a veth pair: peer (with mac) in the namespace ns, the host
// end s.hostLink (down until promotion, marked as ours) enslaved to the
// bridge.
func (s *ServiceNetwork) linkVeth(h *netlink.Handle, bridge netlink.Link, peer string, ns netns.NsHandle, mac net.HardwareAddr) error {
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: s.hostLink, MTU: bridge.Attrs().MTU},
		PeerName:         peer,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(ns)),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", s.hostLink, peer, err)
	}
	host, err := h.LinkByName(s.hostLink)
	if err != nil {
		return fmt.Errorf("find veth end %s: %w", s.hostLink, err)
	}
	if err := h.LinkSetAlias(host, hostLinkAlias(s.nsPath)); err != nil {
		return fmt.Errorf("mark veth end %s: %w", s.hostLink, err)
	}
	if err := h.LinkSetMaster(host, bridge); err != nil {
		return fmt.Errorf("enslave %s to bridge %s: %w", s.hostLink, bridge.Attrs().Name, err)
	}
	return nil
}

// hostLinkAlias marks the host end of a veth as ours (IFLA_IFALIAS): Remove
// and CleanupStale delete a host link only if it carries this mark, never a
// link that merely has the same name.
func hostLinkAlias(nsPath string) string { return "rrc-servicenet " + nsPath }

// vethHostName names the host end of a veth pair after the namespace path,
// within IFNAMSIZ: "rsn" and 8 hex digits of its FNV-1a hash.
func vethHostName(nsPath string) string {
	h := fnv.New32a()
	h.Write([]byte(nsPath))
	return fmt.Sprintf("rsn%08x", h.Sum32())
}
