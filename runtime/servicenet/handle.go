// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/iorrc/rrc/runtime/launch"
)

// handleAt opens a netlink handle bound to the namespace at path.
func handleAt(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	return h, nil
}

// openHandle binds s.handle to the container's namespace. The handle's
// socket holds a reference to the namespace until Remove closes it.
func (s *ServiceNetwork) openHandle() error {
	h, err := handleAt(s.nsPath)
	if err != nil {
		return err
	}
	s.handle = h
	return nil
}

// setLoopbackUp: a new namespace's lo is down, and services that talk to
// themselves over 127.0.0.1 expect it up.
func (s *ServiceNetwork) setLoopbackUp() error {
	lo, err := s.handle.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := s.handle.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// mptcpSysctl is net.mptcp.enabled; it is per network namespace.
const mptcpSysctl = "/proc/sys/net/mptcp/enabled"

// disableMPTCP turns MPTCP off in the service namespace. CRIU cannot
// checkpoint an MPTCP socket (its dump fails with "inet: Unsupported proto
// 262", every epoch), and programs that ask for one fall back to plain TCP
// when it is off — Go 1.24 and later ask for it on every listener by
// default. Clients see TCP either way: MPTCP falls back to TCP with peers
// that do not speak it. A kernel without MPTCP has nothing to turn off.
func (s *ServiceNetwork) disableMPTCP() error {
	err := launch.InNetns(s.nsPath, func() error {
		// /proc/sys/net is the namespace of the thread that opens it.
		return os.WriteFile(mptcpSysctl, []byte("0\n"), 0)
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("turn MPTCP off (%s=0): %w", mptcpSysctl, err)
	}
	return nil
}

// tcpSysctls are set in a namespace Create makes, for the TCP connections of
// a service whose output the gate releases once per epoch: every round trip
// then lasts about an epoch (longer when a checkpoint is late), samples of
// it jump by up to an epoch, and a window's worth of data leaves at once at
// each release.
//
//   - reno: its slow start doubles the window every round trip until a loss,
//     and behind the gate nothing is lost. BBR (the default of some hosts)
//     paces at its estimate of the delivery rate, which is what one release
//     delivered: a 10 MB download at 100 ms epochs crawled at 40-70 KB/s,
//     most of it retransmitted. CUBIC's HyStart takes the jumps in the
//     round-trip samples for queueing and leaves slow start at ~36 segments,
//     then grows by about a segment per round trip: 17.5 s for the same
//     download. Reno is also the one algorithm every kernel allows a
//     namespace to choose (the others only if the host lists them in
//     net.ipv4.tcp_allowed_congestion_control).
//   - no slow start after idle: a keep-alive connection idle for one
//     retransmission timeout (a few epochs) would otherwise start again from
//     ten segments and need several epochs for its next large reply.
var tcpSysctls = [][2]string{
	{"/proc/sys/net/ipv4/tcp_congestion_control", "reno"},
	{"/proc/sys/net/ipv4/tcp_slow_start_after_idle", "0"},
}

// tuneTCP sets tcpSysctls in the service namespace.
func (s *ServiceNetwork) tuneTCP() error {
	return launch.InNetns(s.nsPath, func() error {
		for _, kv := range tcpSysctls {
			if err := os.WriteFile(kv[0], []byte(kv[1]+"\n"), 0); err != nil {
				return fmt.Errorf("set %s=%s: %w", kv[0], kv[1], err)
			}
		}
		return nil
	})
}
