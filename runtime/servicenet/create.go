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
	"slices"

	"github.com/vishvananda/netlink"
)

// Create makes the network namespace of container name, bind-mounted at
// opts.Dir/name, with loopback up and a service interface eth0 carrying
// cfg.Address and cfg.MAC (DeriveMAC when nil). eth0 is a veth to the gate
// namespace (opts.Dir/.gate/name, see Gate), which forwards between it and
// an uplink with the same MAC attached to cfg.Link in the host namespace: a
// veth pair with its host end enslaved when cfg.Link is a bridge, a macvlan
// in bridge mode otherwise.
//
// With standby (the backup) the interfaces are configured but left down, and
// the host end of a veth too, so that this copy never answers ARP or
// packets; Promote brings them up. Without standby it is promoted at once,
// gratuitous ARP included.
//
// Only the connected route of cfg.Address is installed: the service answers
// clients on its LAN. A container that must reach other subnets needs a
// default route, which the settings cannot express yet.
//
// On failure nothing is left behind.
func Create(ctx context.Context, name string, cfg Settings, standby bool, opts Options) (_ *ServiceNetwork, err error) {
	ip, mac, err := validateConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	dir, err := checkOptions(name, &opts)
	if err != nil {
		return nil, err
	}
	s := &ServiceNetwork{
		name:      name,
		nsPath:    filepath.Join(dir, name),
		dir:       dir,
		hostNetns: opts.hostNetns(),
		opts:      opts,
		log:       opts.logger().With("container", name),
		standby:   true,
	}
	if _, err := os.Lstat(s.nsPath); err == nil {
		return nil, fmt.Errorf("service network %s: %s exists (left by a crashed shim? CleanupStale removes it)", name, s.nsPath)
	}

	hostLink, isBridge, err := findHostLink(s.hostNetns, cfg.Link)
	if err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	if isBridge {
		s.hostLink = vethHostName(s.nsPath)
	}
	if err := prepareDir(dir); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	owner, err := selfOwner()
	if err != nil {
		return nil, fmt.Errorf("service network %s: read own start time: %w", name, err)
	}
	s.gate = &gateNS{path: gatePath(dir, name)}
	owner.HostNetns, owner.HostLink, owner.GateNetns = s.hostNetns, s.hostLink, s.gate.path
	// The record goes first so that CleanupStale can find whatever a
	// crash in the steps below leaves.
	if err := writeRecord(recordPath(dir, name), owner); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			if rerr := s.Remove(context.WithoutCancel(ctx)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
			}
		}
	}()
	if err := s.makeNamespace(); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	if err := s.tuneTCP(); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	if err := s.makeGate(hostLink, isBridge, mac, cfg.Address); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	link, err := s.handle.LinkByName(ServiceIfName)
	if err != nil {
		return nil, fmt.Errorf("service network %s: find %s in the new namespace: %w", name, ServiceIfName, err)
	}
	// The address is configured while the link is down: the kernel keeps
	// it, and adds the connected route only when the link comes up.
	if err := s.handle.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: cfg.Address.Mask}}); err != nil {
		return nil, fmt.Errorf("service network %s: add %s to %s: %w", name, cfg.Address, ServiceIfName, err)
	}
	// The announcements leave through the uplink, which carries the
	// service MAC on the LAN.
	a, err := openAnnouncer(s.gate.path, GateUplinkIf, s.gate.uplink, mac, ip)
	if err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	s.links = []serviceLink{{name: ServiceIfName, index: link.Attrs().Index, mac: mac, announcer: []*announcer{a}}}
	kind := "macvlan"
	if isBridge {
		kind = "veth"
	}
	s.log.Info("service network created", "netns", s.nsPath, "gate_netns", s.gate.path, "kind", kind, "link", cfg.Link, "address", cfg.Address.String(), "mac", mac.String(), "standby", standby, "host_link", s.hostLink)
	if !standby {
		if _, err := s.Promote(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// makeNamespace makes the namespace at s.nsPath with lo up and MPTCP off
// (CRIU cannot dump MPTCP sockets), and opens the handle on it.
func (s *ServiceNetwork) makeNamespace() error {
	if err := newNetnsFile(s.nsPath); err != nil {
		return err
	}
	if err := s.openHandle(); err != nil {
		return err
	}
	if err := s.setLoopbackUp(); err != nil {
		return err
	}
	return s.disableMPTCP()
}

// checkOptions checks the name and the options Create and NewEmpty share,
// takes its own copy of the GARP schedule (the caller may reuse its slice)
// and returns the clean Dir.
func checkOptions(name string, opts *Options) (string, error) {
	if err := validateName(name); err != nil {
		return "", fmt.Errorf("service network: %w", err)
	}
	if opts.Dir == "" || !filepath.IsAbs(opts.Dir) {
		return "", fmt.Errorf("service network %s: Options.Dir must be an absolute path (got %q)", name, opts.Dir)
	}
	if err := validateSchedule(opts.garpSchedule()); err != nil {
		return "", fmt.Errorf("service network %s: %w", name, err)
	}
	opts.GARPSchedule = slices.Clone(opts.GARPSchedule)
	return filepath.Clean(opts.Dir), nil
}
