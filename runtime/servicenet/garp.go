// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"encoding/binary"
	"fmt"
	"net"
)

// ARP operations (RFC 826).
const (
	arpRequest uint16 = 1
	arpReply   uint16 = 2
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	arpHTypeEther = 1
	// minFrameLen is the shortest Ethernet frame without its FCS; real
	// NICs pad to it, veth and macvlan do not, so the frame is padded here.
	minFrameLen = 60
)

// GARPFrame encodes a gratuitous ARP frame announcing that ip is at mac,
// broadcast on the LAN. Both forms are sent because neighbours differ in what
// they act on:
//
//   - request (op 1): sender = target = ip, target MAC zero (RFC 5227
//     announcement); what Linux itself sends (arp_notify) and what every
//     stack that keeps a cache for ip updates from;
//   - reply (op 2): sender = target = ip, target MAC = mac (RFC 2002 style);
//     some older stacks and switches only learn from replies.
//
// Any frame updates a learning bridge's forwarding table for mac.
func GARPFrame(op uint16, mac net.HardwareAddr, ip net.IP) ([]byte, error) {
	ip4 := ip.To4()
	if ip4 == nil {
		return nil, fmt.Errorf("gratuitous ARP: %s is not an IPv4 address", ip)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("gratuitous ARP: %s is not an Ethernet address", mac)
	}
	if op != arpRequest && op != arpReply {
		return nil, fmt.Errorf("gratuitous ARP: operation %d is neither request nor reply", op)
	}
	f := make([]byte, minFrameLen)
	// Ethernet header: broadcast destination, our source.
	copy(f[0:6], net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	// ARP payload.
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], arpHTypeEther)
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], mac)  // sender hardware address
	copy(a[14:18], ip4) // sender protocol address
	if op == arpReply {
		copy(a[18:24], mac) // target hardware address
	}
	copy(a[24:28], ip4) // target protocol address
	return f, nil
}

// garpFrames returns the frames of one announcement of ip at mac: a
// request and a reply.
func garpFrames(mac net.HardwareAddr, ip net.IP) ([][]byte, error) {
	var frames [][]byte
	for _, op := range []uint16{arpRequest, arpReply} {
		f, err := GARPFrame(op, mac, ip)
		if err != nil {
			return nil, err
		}
		frames = append(frames, f)
	}
	return frames, nil
}
