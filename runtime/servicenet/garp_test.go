// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"bytes"
	"encoding/hex"
	"net"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGARPFrame(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x52, 0x0a, 0x55, 0x00, 0xc8}
	ip := net.ParseIP("10.85.0.200")
	pad := strings.Repeat("00", 18)
	for _, tc := range []struct {
		name string
		op   uint16
		want string
	}{
		{"request", arpRequest, "ffffffffffff 02520a5500c8 0806" + // Ethernet: broadcast, from mac, ARP
			"0001 0800 06 04 0001" + // Ethernet/IPv4, request
			"02520a5500c8 0a5500c8" + // sender: mac, ip
			"000000000000 0a5500c8" + // target: zero MAC (RFC 5227), ip
			pad},
		{"reply", arpReply, "ffffffffffff 02520a5500c8 0806" +
			"0001 0800 06 04 0002" + // reply
			"02520a5500c8 0a5500c8" +
			"02520a5500c8 0a5500c8" + // target: mac, ip
			pad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GARPFrame(tc.op, mac, ip)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, tc.want)
			if len(got) != minFrameLen {
				t.Fatalf("frame is %d bytes, want %d", len(got), minFrameLen)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("frame\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestGARPFrameErrors(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x52, 0x0a, 0x55, 0x00, 0xc8}
	for _, tc := range []struct {
		name string
		op   uint16
		mac  net.HardwareAddr
		ip   net.IP
		want string
	}{
		{"ipv6", arpRequest, mac, net.ParseIP("fd00::1"), "not an IPv4"},
		{"nil ip", arpRequest, mac, nil, "not an IPv4"},
		{"short mac", arpRequest, mac[:4], net.ParseIP("10.0.0.1"), "not an Ethernet"},
		{"eui64", arpRequest, net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, net.ParseIP("10.0.0.1"), "not an Ethernet"},
		{"bad op", 3, mac, net.ParseIP("10.0.0.1"), "neither request nor reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := GARPFrame(tc.op, tc.mac, tc.ip)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestGARPFramesBothForms(t *testing.T) {
	frames, err := garpFrames(net.HardwareAddr{2, 0x52, 1, 2, 3, 4}, net.ParseIP("1.2.3.4"))
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0][21] != 1 || frames[1][21] != 2 {
		t.Fatalf("want a request then a reply, got ops %d/%d", frames[0][21], frames[1][21])
	}
}
