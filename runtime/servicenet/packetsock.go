// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// announcer sends gratuitous ARP for one interface of the container's
// namespace through an AF_PACKET socket opened inside that namespace. It is
// opened ahead of time (Create, Adopt) so that Promote does no setns.
type announcer struct {
	fd      int
	ifName  string
	ifIndex int
	frames  [][]byte
}

// openAnnouncer opens the packet socket in the namespace at nsPath for
// the interface ifIndex announcing ip at mac. Protocol 0: the socket
// receives nothing, so its queue never fills while it waits for Promote.
func openAnnouncer(nsPath, ifName string, ifIndex int, mac net.HardwareAddr, ip net.IP) (*announcer, error) {
	frames, err := garpFrames(mac, ip)
	if err != nil {
		return nil, err
	}
	fd := -1
	err = launch.InNetns(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open packet socket in %s: %w", nsPath, err)
	}
	return &announcer{fd: fd, ifName: ifName, ifIndex: ifIndex, frames: frames}, nil
}

// htons converts a protocol number to network byte order, as sockaddr_ll
// wants it.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// announce sends the request and the reply once.
func (a *announcer) announce() error {
	to := &unix.SockaddrLinklayer{
		Protocol: htons(etherTypeARP),
		Ifindex:  a.ifIndex,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	for _, f := range a.frames {
		if err := unix.Sendto(a.fd, f, 0, to); err != nil {
			return fmt.Errorf("send gratuitous ARP on %s: %w", a.ifName, err)
		}
	}
	return nil
}

func (a *announcer) close() {
	if a.fd >= 0 {
		unix.Close(a.fd)
		a.fd = -1
	}
}
