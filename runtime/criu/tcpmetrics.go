// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/runtime/launch"
)

// A TCP socket that CRIU restores has no RTT estimate: TCP repair restores
// sequence numbers, windows and options, not the timers. When the kernel
// establishes it (tcp_init_metrics) with no RTT sample and nothing cached
// for the peer, it sets the retransmission timeout to the 3 s fallback, and
// a tail loss probe, which needs an RTT too, waits 1 s. So after a failover
// a restored connection whose last data the client never got waits about a
// second before it sends it again. With an entry in the namespace's TCP
// metrics cache for the peer, the kernel starts the socket at the minimum
// timeout (200 ms) instead. PrimeTCPMetrics makes those entries before the
// restore, by opening and closing a connection from each local address to
// each peer inside the namespace, the peer's address borrowed on lo for the
// moment.

// PrimeTCPMetrics puts an entry for every IPv4 (local, remote) address pair
// of conns into the TCP metrics cache of the network namespace at
// netnsPath. It returns the number of pairs primed. Pairs whose remote
// address is loopback or local to the namespace are left out (their RTT is
// microseconds anyway).
func PrimeTCPMetrics(netnsPath string, conns []criuimage.TCPConn) (_ int, retErr error) {
	type pair struct{ local, remote netip.Addr }
	seen := map[pair]bool{}
	var pairs []pair
	for _, c := range conns {
		p := pair{c.Local.Addr(), c.Remote.Addr()}
		if !p.local.Is4() || !p.remote.Is4() || p.remote.IsLoopback() || p.local == p.remote || seen[p] {
			continue
		}
		seen[p] = true
		pairs = append(pairs, p)
	}
	if len(pairs) == 0 {
		return 0, nil
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return 0, fmt.Errorf("prime TCP metrics: open %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, fmt.Errorf("prime TCP metrics: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return 0, fmt.Errorf("prime TCP metrics: lo in %s: %w", netnsPath, err)
	}
	local := map[netip.Addr]bool{}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("prime TCP metrics: addresses in %s: %w", netnsPath, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			local[ip] = true
		}
	}
	var borrowed []*netlink.Addr
	defer func() {
		for _, a := range borrowed {
			if err := h.AddrDel(lo, a); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("prime TCP metrics: removing the borrowed %s from lo: %w", a.IPNet, err))
			}
		}
	}()
	n := 0
	var errs []error
	for _, p := range pairs {
		if local[p.remote] || !local[p.local] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.remote.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: unix.RT_SCOPE_HOST}
		if err := h.AddrAdd(lo, a); err != nil {
			errs = append(errs, fmt.Errorf("borrow %s on lo: %w", p.remote, err))
			continue
		}
		borrowed = append(borrowed, a)
		if err := launch.InNetns(netnsPath, func() error { return primeOne(p.local, p.remote) }); err != nil {
			errs = append(errs, fmt.Errorf("%s -> %s: %w", p.local, p.remote, err))
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("prime TCP metrics in %s: %w", netnsPath, errors.Join(errs...))
	}
	return n, nil
}

// primeOne opens a connection from local to remote (a listener on remote),
// exchanges a byte each way so that both sides measure an RTT, and closes
// it with the listener's side first: the dialer's side (local -> remote)
// then closes last (LAST_ACK), and the kernel saves its RTT for remote in
// the metrics cache.
func primeOne(local, remote netip.Addr) error {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: remote.AsSlice()})
	if err != nil {
		return err
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: time.Second}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := ln.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(time.Second))
	s.SetDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if _, err := c.Write([]byte{1}); err != nil {
		s.Close()
		return err
	}
	if _, err := io.ReadFull(s, b[:]); err != nil {
		s.Close()
		return err
	}
	if _, err := s.Write([]byte{1}); err != nil {
		s.Close()
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		s.Close()
		return err
	}
	s.Close()
	if _, err := c.Read(b[:]); err != io.EOF {
		return fmt.Errorf("waiting for the listener's side to close: %v", err)
	}
	return c.Close()
}
