// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"net"
	"testing"
)

func TestDeriveMAC(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want string
	}{
		{"10.85.0.200", "02:52:0a:55:00:c8"},
		{"10.77.0.200", "02:52:0a:4d:00:c8"},
		{"192.168.1.1", "02:52:c0:a8:01:01"},
		{"::ffff:10.0.0.1", "02:52:0a:00:00:01"}, // IPv4-mapped counts as IPv4
		{"255.255.255.254", "02:52:ff:ff:ff:fe"},
		{"fd00::1", ""},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			got := DeriveMAC(net.ParseIP(tc.ip))
			if got.String() != tc.want {
				t.Fatalf("DeriveMAC(%s) = %q, want %q", tc.ip, got, tc.want)
			}
			if got == nil {
				return
			}
			if got[0]&0x01 != 0 || got[0]&0x02 == 0 {
				t.Fatalf("%s is not a locally administered unicast address", got)
			}
			if err := validateMAC(got); err != nil {
				t.Fatalf("derived MAC %s fails validation: %v", got, err)
			}
		})
	}
	// Both hosts derive the same MAC; distinct addresses never collide.
	a, b := DeriveMAC(net.ParseIP("10.85.0.200")), DeriveMAC(net.ParseIP("10.85.0.201"))
	if a.String() == b.String() {
		t.Fatalf("distinct addresses share MAC %s", a)
	}
}

func TestVethHostName(t *testing.T) {
	a := vethHostName("/run/x/servicenet/c1")
	if len(a) > 15 || len(a) != 11 || a[:3] != "rsn" {
		t.Fatalf("vethHostName = %q: want rsn + 8 hex digits", a)
	}
	if a != vethHostName("/run/x/servicenet/c1") {
		t.Fatal("vethHostName is not deterministic")
	}
	if a == vethHostName("/run/x/servicenet/c2") {
		t.Fatal("vethHostName collides for c1 and c2")
	}
}
