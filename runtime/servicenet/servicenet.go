// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
)

// ServiceNetwork is the network namespace of one replicated container and
// the service interface(s) in it. Its methods may be called from any
// goroutine.
type ServiceNetwork struct {
	name    string
	nsPath  string
	dir     string // "" when adopted: the namespace is not ours
	adopted bool
	made    bool // adopted, but NewEmpty made the namespace: Remove deletes it
	// hostNetns and hostLink name the host end of a veth pair; hostLink
	// is "" for a macvlan or an adopted namespace.
	hostNetns string
	hostLink  string
	// gate is the namespace that forwards between eth0 and the LAN; nil
	// when adopted.
	gate *gateNS
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	handle   *netlink.Handle // bound to the container's namespace
	links    []serviceLink
	standby  bool
	removed  bool
	replay   *ReplayLinks // OpenReplayLinks's, closed by Remove
	stopGARP context.CancelFunc
	garpDone chan struct{}
}

// serviceLink is one interface this package brings up on promotion.
type serviceLink struct {
	name      string
	index     int
	mac       net.HardwareAddr
	announcer []*announcer // one per IPv4 address
	// routes of an adopted link set down for the standby, which the
	// kernel deletes then; Promote adds them again.
	routes []netlink.Route
}

// NetnsPath is the path of the container's network namespace: the path the
// OCI spec's linux.namespaces network entry must name.
func (s *ServiceNetwork) NetnsPath() string { return s.nsPath }

// Adopted reports whether the namespace was made by someone else (Adopt).
func (s *ServiceNetwork) Adopted() bool { return s.adopted }

// HostLink is the host end of the veth pair ("" for a macvlan or an adopted
// namespace).
func (s *ServiceNetwork) HostLink() string { return s.hostLink }

// Standby reports whether the service interfaces are held down.
func (s *ServiceNetwork) Standby() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.standby
}

// Links names the interfaces in the container's namespace that this
// package holds down on standby and brings up on promotion.
func (s *ServiceNetwork) Links() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.linkNames()
}
