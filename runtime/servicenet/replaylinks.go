// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// ReplayLinks send packets from the gate namespace for a replay (hybrid
// mode's failover): into the container as if from the LAN, and to the LAN
// as if from the container. Opened ahead of time, like the announcers, so
// the failover does no setns.
type ReplayLinks struct {
	inner   int // AF_PACKET socket that sends out of GateInnerIf
	innerIf int
	mac     net.HardwareAddr // the container's eth0
	uplink  int              // raw IPv4 socket, routed by the gate namespace
}

// OpenReplayLinks opens the sockets in the gate namespace (once; Remove
// closes them); a network without one (adopted) cannot replay.
func (s *ServiceNetwork) OpenReplayLinks() (*ReplayLinks, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replay != nil {
		return s.replay, nil
	}
	if s.removed || s.gate == nil || len(s.links) == 0 {
		return nil, fmt.Errorf("service network %s: no gate namespace to replay in", s.name)
	}
	r := &ReplayLinks{inner: -1, uplink: -1, innerIf: s.gate.inner, mac: s.links[0].mac}
	err := launch.InNetns(s.gate.path, func() error {
		var err error
		// Protocol 0: the socket receives nothing.
		if r.inner, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		// IPPROTO_RAW sends whole IP headers (IP_HDRINCL) and receives nothing.
		if r.uplink, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		return nil
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("service network %s: opening the replay's sockets in the gate namespace: %w", s.name, err)
	}
	s.replay = r
	return r, nil
}

// ToContainer sends an IPv4 packet (from its header on) out of the gate's
// link to the container, addressed to the container's MAC: it arrives on
// eth0 as if the gate had forwarded it from the LAN.
func (r *ReplayLinks) ToContainer(packet []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: r.innerIf, Halen: 6}
	copy(to.Addr[:], r.mac)
	if err := unix.Sendto(r.inner, packet, 0, to); err != nil {
		return fmt.Errorf("send %d bytes to the container: %w", len(packet), err)
	}
	return nil
}

// ToLAN sends an IPv4 packet (from its header on, source address
// included) through the gate's routes, i.e. out of the uplink once it is up.
func (r *ReplayLinks) ToLAN(packet []byte) error {
	if len(packet) < 20 || packet[0]>>4 != 4 {
		return errors.New("send to the LAN: not an IPv4 packet")
	}
	to := &unix.SockaddrInet4{Addr: [4]byte(packet[16:20])}
	if err := unix.Sendto(r.uplink, packet, 0, to); err != nil {
		return fmt.Errorf("send %d bytes to %s: %w", len(packet), net.IP(packet[16:20]), err)
	}
	return nil
}

// Close closes the sockets.
func (r *ReplayLinks) Close() error {
	var errs []error
	for _, fd := range []*int{&r.inner, &r.uplink} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}
