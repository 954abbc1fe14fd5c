package replication

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
type StandbyService struct {
	NetNS  string     // the standby service network namespace
	Prefix *net.IPNet // the service address's prefix, e.g. 10.86.0.0/24
	// Up brings the service link up and announces it (servicenet's
	// ServiceNetwork.Promote, wrapped by the caller).
	Up func(ctx context.Context) error
}

// PrepareRestore implements ServicePromoter.
func (s StandbyService) PrepareRestore(ctx context.Context) error {
	return s.withHandle(func(h *netlink.Handle, r *netlink.Route) error {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("adding the restore route %s via lo in %s: %w", s.Prefix, s.NetNS, err)
		}
		return nil
	})
}

// Promote implements ServicePromoter.
func (s StandbyService) Promote(ctx context.Context) error {
	if err := s.Up(ctx); err != nil {
		return err
	}
	return s.withHandle(func(h *netlink.Handle, r *netlink.Route) error {
		// Already gone (ESRCH) is fine.
		if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("removing the restore route %s via lo in %s: %w", s.Prefix, s.NetNS, err)
		}
		return nil
	})
}

// withHandle runs f with a netlink handle bound to the namespace (no setns
// on this thread) and the temporary route.
func (s StandbyService) withHandle(f func(*netlink.Handle, *netlink.Route) error) error {
	if s.Prefix == nil {
		return errors.New("standby service: no service prefix")
	}
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
	prefix := &net.IPNet{IP: s.Prefix.IP.Mask(s.Prefix.Mask), Mask: s.Prefix.Mask}
	return f(h, &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: prefix, Priority: restoreRouteMetric, Scope: netlink.SCOPE_LINK})
}
