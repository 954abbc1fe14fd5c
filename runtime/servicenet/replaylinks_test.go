// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/iorrc/rrc/runtime/launch"
)

// udp4 builds an IPv4 UDP packet (no UDP checksum, which IPv4 allows).
func udp4(src, dst *net.UDPAddr, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:16], src.IP.To4())
	copy(p[16:20], dst.IP.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], uint16(src.Port))
	binary.BigEndian.PutUint16(p[22:], uint16(dst.Port))
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// listenUDP listens in the namespace at ns and returns what arrives first.
func listenUDP(t *testing.T, ns, addr string) <-chan string {
	t.Helper()
	var c net.PacketConn
	if err := launch.InNetns(ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 1500)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := c.ReadFrom(b)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- from.String() + " " + string(b[:n])
	}()
	return got
}

// TestReplayLinks: a packet handed to ToContainer arrives in the
// container's namespace as if from the LAN (its source kept), and one
// handed to ToLAN leaves through the uplink with the container's address.
func TestReplayLinks(t *testing.T) {
	host := newTestHost(t)
	host.addVethPair(t, "lan0", "wire0")
	client := scratchNetns(t, t.TempDir(), "client")
	hh, ch := testHandle(t, host.netns), testHandle(t, client)
	if err := hh.LinkSetNsFd(mustLink(t, hh, "wire0"), int(openNs(t, client))); err != nil {
		t.Fatal(err)
	}
	if err := ch.AddrAdd(mustLink(t, ch, "wire0"), &netlink.Addr{IPNet: cidr(t, "10.99.0.100/24")}); err != nil {
		t.Fatal(err)
	}
	mustUp(t, ch, "wire0")
	mustUp(t, ch, "lo")
	sn := createT(t, "c7", Settings{Address: cidr(t, "10.99.0.205/24"), Link: "lan0"}, false, host.opts(t))
	links, err := sn.OpenReplayLinks()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := sn.OpenReplayLinks(); err != nil || again != links {
		t.Fatalf("second OpenReplayLinks: %v, %v", again, err)
	}
	clientAddr := &net.UDPAddr{IP: net.ParseIP("10.99.0.100"), Port: 5555}
	service := &net.UDPAddr{IP: net.ParseIP("10.99.0.205"), Port: 9000}

	inContainer := listenUDP(t, sn.NetnsPath(), service.String())
	if err := links.ToContainer(udp4(clientAddr, service, "to the container")); err != nil {
		t.Fatal(err)
	}
	if got := <-inContainer; got != "10.99.0.100:5555 to the container" {
		t.Errorf("in the container: %q", got)
	}

	atClient := listenUDP(t, client, "10.99.0.100:9001")
	if err := links.ToLAN(udp4(service, &net.UDPAddr{IP: clientAddr.IP, Port: 9001}, "to the client")); err != nil {
		t.Fatal(err)
	}
	if got := <-atClient; got != "10.99.0.205:9000 to the client" {
		t.Errorf("at the client: %q", got)
	}
	if err := links.ToLAN([]byte{0x60, 0, 0, 0}); err == nil {
		t.Error("ToLAN took an IPv6 packet")
	}
}
