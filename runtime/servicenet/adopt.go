// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// Adopt takes a network namespace that the OCI spec already names (made by
// CNI, nerdctl, ...) and applies the standby rule to it without creating
// anything: with standby every interface but loopback is set down, and
// Promote brings the same interfaces up and announces their IPv4
// addresses. Remove lets go of it without deleting anything.
func Adopt(ctx context.Context, nsPath string, standby bool, opts Options) (_ *ServiceNetwork, err error) {
	if !filepath.IsAbs(nsPath) {
		return nil, fmt.Errorf("adopt network namespace %q: not an absolute path", nsPath)
	}
	if err := validateSchedule(opts.garpSchedule()); err != nil {
		return nil, fmt.Errorf("adopt network namespace %s: %w", nsPath, err)
	}
	opts.GARPSchedule = slices.Clone(opts.GARPSchedule) // the caller may reuse its slice
	s := &ServiceNetwork{
		name:    filepath.Base(nsPath),
		nsPath:  nsPath,
		adopted: true,
		opts:    opts,
		log:     opts.logger().With("netns", nsPath),
		standby: true,
	}
	if err := s.openHandle(); err != nil {
		return nil, fmt.Errorf("adopt network namespace: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Remove(context.WithoutCancel(ctx)))
		}
	}()
	if err := s.disableMPTCP(); err != nil {
		return nil, fmt.Errorf("adopt network namespace %s: %w", nsPath, err)
	}
	if err := s.adoptLinks(standby); err != nil {
		return nil, fmt.Errorf("adopt network namespace %s: %w", nsPath, err)
	}
	s.log.Info("network namespace adopted", "links", s.linkNames(), "standby", standby)
	return s, nil
}

// adoptLinks takes every interface of the namespace but loopback as a
// service link: with standby it is set down (its routes kept for Promote),
// and its IPv4 addresses get an announcer each.
func (s *ServiceNetwork) adoptLinks(standby bool) error {
	links, err := s.handle.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&unix.IFF_LOOPBACK != 0 || a.Name == "lo" {
			continue
		}
		sl := serviceLink{name: a.Name, index: a.Index, mac: a.HardwareAddr}
		if standby {
			if sl.routes, err = s.keepAcrossDown(a.Name, a.Index); err != nil {
				return err
			}
			// Down first: until then this copy could answer.
			if err := s.handle.LinkSetDown(l); err != nil {
				return fmt.Errorf("set %s down: %w", a.Name, err)
			}
		}
		addrs, err := s.handle.AddrList(l, netlink.FAMILY_V4)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		if len(a.HardwareAddr) == 6 {
			for _, addr := range addrs {
				an, err := openAnnouncer(s.nsPath, a.Name, a.Index, a.HardwareAddr, addr.IP)
				if err != nil {
					return err
				}
				sl.announcer = append(sl.announcer, an)
			}
		}
		s.links = append(s.links, sl)
	}
	s.standby = standby
	return nil
}

// keepAcrossDown prepares link name (index) to be set down and up again as
// it was: setting a link down makes the kernel delete the routes through it
// (e.g. CNI's default route via the bridge) and, by default, its IPv6
// addresses. It returns the routes the kernel will not make again by
// itself when the link is up (not its own "kernel" ones), and keeps the
// IPv6 addresses (keep_addr_on_down; absent without IPv6).
func (s *ServiceNetwork) keepAcrossDown(name string, index int) ([]netlink.Route, error) {
	sysctl := "/proc/sys/net/ipv6/conf/" + name + "/keep_addr_on_down"
	err := launch.InNetns(s.nsPath, func() error { return os.WriteFile(sysctl, []byte("1\n"), 0) })
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("keep the IPv6 addresses of %s (%s=1): %w", name, sysctl, err)
	}
	routes, err := s.handle.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: index}, netlink.RT_FILTER_OIF)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list the routes through %s: %w", name, err)
	}
	var keep []netlink.Route
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_KERNEL {
			keep = append(keep, r)
		}
	}
	return keep, nil
}

func (s *ServiceNetwork) linkNames() []string {
	var out []string
	for _, l := range s.links {
		out = append(out, l.name)
	}
	return out
}
