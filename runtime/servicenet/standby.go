// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// restoreRouteMetric is the priority of the temporary route: the worst
// possible, so that the service link's own prefix route (metric 0) wins as
// soon as the link is up.
const restoreRouteMetric = 0xFFFFFFF0

// StandbyService is the backup's service network around a restore.
//
// CRIU re-creates an established TCP socket by connect()ing it in repair
// mode, which needs a route to the client. The standby link is down, and a
// down link has no prefix route, so the restore fails ("soccr: Can't
// connect inet socket back: Network is unreachable"). Bringing the link up
// first would let the kernel answer the clients' retransmissions with RSTs
// before their sockets exist. Instead, PrepareRestore adds a temporary
// route to the service prefix through loopback, with the worst metric:
// connect() finds a route, nothing leaves the namespace (repaired sockets
// send nothing, and loopback goes nowhere), and the link stays down during
// the whole restore, as servicenet's standby rule wants. Promote brings the
// link up (its prefix route takes over at once), announces it, and removes
// the temporary route; sockets re-route on their next packet (the route
// change invalidates their cached route).
//
// An adopted namespace (CNI's) has no one service prefix, and its clients
// may be behind a gateway: with Prefix nil the temporary routes cover every
// destination, IPv4 and IPv6 (0.0.0.0/0 and ::/0 through lo; the IPv6 one
// is left out where the namespace has IPv6 off). The namespace's own routes
// (prefix, default via the gateway) have better metrics and win once the
// link is up.
type StandbyService struct {
	NetNS  string     // the standby service network namespace
	Prefix *net.IPNet // the service address's prefix, e.g. 10.86.0.0/24; nil: all
	// Up brings the service link up and announces it (servicenet's
	// ServiceNetwork.Promote, wrapped by the caller).
	Up func(ctx context.Context) error
}

// PrepareRestore adds the temporary routes through lo.
func (s StandbyService) PrepareRestore(ctx context.Context) error {
	return s.withHandle(func(h *netlink.Handle, r *netlink.Route) error {
		err := h.RouteReplace(r)
		if err != nil && s.Prefix == nil && r.Dst.IP.To4() == nil && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT)) {
			return nil // IPv6 off in this namespace: no IPv6 client to restore
		}
		if err != nil {
			return fmt.Errorf("adding the restore route %s via lo in %s: %w", r.Dst, s.NetNS, err)
		}
		return nil
	})
}

// Promote brings the link up (Up) and removes the temporary routes.
func (s StandbyService) Promote(ctx context.Context) error {
	if err := s.Up(ctx); err != nil {
		return err
	}
	return s.withHandle(func(h *netlink.Handle, r *netlink.Route) error {
		// Already gone (ESRCH), or never added (IPv6 off), is fine.
		if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !(s.Prefix == nil && r.Dst.IP.To4() == nil) {
			return fmt.Errorf("removing the restore route %s via lo in %s: %w", r.Dst, s.NetNS, err)
		}
		return nil
	})
}

// withHandle runs f with a netlink handle bound to the namespace (no setns
// on this thread) for each temporary route, until an error.
func (s StandbyService) withHandle(f func(*netlink.Handle, *netlink.Route) error) error {
	ns, err := netns.GetFromPath(s.NetNS)
	if err != nil {
		return fmt.Errorf("opening service netns %s: %w", s.NetNS, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", s.NetNS, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback in %s: %w", s.NetNS, err)
	}
	dsts := []*net.IPNet{{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
	if s.Prefix != nil {
		dsts = []*net.IPNet{{IP: s.Prefix.IP.Mask(s.Prefix.Mask), Mask: s.Prefix.Mask}}
	}
	for _, dst := range dsts {
		if err := f(h, &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Priority: restoreRouteMetric, Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
	}
	return nil
}
