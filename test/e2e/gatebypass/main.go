// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command gatebypass is what a hostile replicated container tries in order
// to get its output past the output gate (TestGateBypass): built static,
// copied into the container and run there with the container's
// capabilities.
//
//	gatebypass raw IFACE SRCIP DSTIP:PORT MAC PAYLOAD   one IPv4/UDP datagram through an AF_PACKET socket (CAP_NET_RAW), to MAC
//	gatebypass flush                                    nft flush ruleset in its network namespace (CAP_NET_ADMIN), all families
//	gatebypass udp DSTIP:PORT PAYLOAD                   one datagram through an ordinary UDP socket
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gatebypass:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 6 && args[0] == "raw":
		return sendRaw(args[1], args[2], args[3], args[4], []byte(args[5]))
	case len(args) == 1 && args[0] == "flush":
		return flushRuleset()
	case len(args) == 3 && args[0] == "udp":
		c, err := net.Dial("udp4", args[1])
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(args[2]))
		return err
	}
	return errors.New("usage: raw IFACE SRCIP DSTIP:PORT MAC PAYLOAD | flush | udp DSTIP:PORT PAYLOAD")
}

// sendRaw builds the IPv4 and UDP headers itself and hands the datagram to
// the link layer: a packet socket skips the IP stack, and with it any
// netfilter hook of the sender's namespace.
func sendRaw(iface, src, dst, mac string, payload []byte) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	from, err := netip.ParseAddr(src)
	if err != nil {
		return err
	}
	to, err := netip.ParseAddrPort(dst)
	if err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index, Halen: 6}
	copy(sa.Addr[:], hw)
	if err := unix.Sendto(fd, ipv4UDP(from, to, payload), 0, sa); err != nil {
		return fmt.Errorf("send to %s on %s: %w", hw, iface, err)
	}
	return nil
}

func ipv4UDP(src netip.Addr, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload) // UDP checksum 0: none
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// flushRuleset is `nft flush ruleset`: one nf_tables batch with a
// NFT_MSG_DELTABLE of family unspec and no name, which deletes every table
// of the namespace, iptables-nft's mangle table with the gate's jumps among
// them.
func flushRuleset() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netfilter netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	msg := func(typ uint16, flags uint16, seq uint32, resID uint16) []byte {
		m := make([]byte, unix.NLMSG_HDRLEN+4)
		binary.NativeEndian.PutUint32(m[0:], uint32(len(m)))
		binary.NativeEndian.PutUint16(m[4:], typ)
		binary.NativeEndian.PutUint16(m[6:], flags)
		binary.NativeEndian.PutUint32(m[8:], seq)
		m[16] = unix.AF_UNSPEC // nfgenmsg: family, version, res_id
		m[17] = unix.NFNETLINK_V0
		binary.BigEndian.PutUint16(m[18:], resID)
		return m
	}
	var batch []byte
	batch = append(batch, msg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, 1, unix.NFNL_SUBSYS_NFTABLES)...)
	batch = append(batch, msg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELTABLE, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 2, 0)...)
	batch = append(batch, msg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, 3, unix.NFNL_SUBSYS_NFTABLES)...)
	if err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send the flush: %w", err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("read the flush's answer: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return fmt.Errorf("flush ruleset: %w", unix.Errno(-errno))
			}
			return nil
		}
	}
	return errors.New("flush ruleset: no answer")
}
