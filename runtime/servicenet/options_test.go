// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"net"
	"strings"
	"testing"
	"time"
)

func cidr(t *testing.T, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

func TestValidateConfig(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		cfg     Settings
		wantMAC string
		wantErr []string // substrings, all required; nil = valid
	}{
		{name: "derived mac", cfg: Settings{Address: cidr(t, "10.85.0.200/24"), Link: "eth0"}, wantMAC: "02:52:0a:55:00:c8"},
		{name: "given mac", cfg: Settings{Address: cidr(t, "10.85.0.200/24"), MAC: mac("02:aa:bb:cc:dd:ee"), Link: "br0"}, wantMAC: "02:aa:bb:cc:dd:ee"},
		{name: "host route", cfg: Settings{Address: cidr(t, "10.85.0.200/32"), Link: "eth0"}, wantMAC: "02:52:0a:55:00:c8"},
		{name: "no address", cfg: Settings{Link: "eth0"}, wantErr: []string{"service address: required"}},
		{name: "ipv6", cfg: Settings{Address: cidr(t, "fd00::1/64"), Link: "eth0"}, wantErr: []string{"only IPv4"}},
		{name: "prefix 0", cfg: Settings{Address: cidr(t, "10.0.0.1/0"), Link: "eth0"}, wantErr: []string{"prefix length"}},
		{name: "loopback", cfg: Settings{Address: cidr(t, "127.0.0.2/8"), Link: "eth0"}, wantErr: []string{"not a unicast host"}},
		{name: "multicast", cfg: Settings{Address: cidr(t, "224.0.0.5/24"), Link: "eth0"}, wantErr: []string{"not a unicast host"}},
		{name: "multicast mac", cfg: Settings{Address: cidr(t, "10.0.0.1/24"), MAC: mac("01:00:5e:00:00:01"), Link: "eth0"}, wantErr: []string{"multicast bit"}},
		{name: "zero mac", cfg: Settings{Address: cidr(t, "10.0.0.1/24"), MAC: mac("00:00:00:00:00:00"), Link: "eth0"}, wantErr: []string{"all zeros"}},
		{name: "long mac", cfg: Settings{Address: cidr(t, "10.0.0.1/24"), MAC: mac("02:00:00:00:00:00:00:01"), Link: "eth0"}, wantErr: []string{"6-byte"}},
		{name: "no link", cfg: Settings{Address: cidr(t, "10.0.0.1/24")}, wantErr: []string{"service link: required"}},
		{name: "long link", cfg: Settings{Address: cidr(t, "10.0.0.1/24"), Link: "abcdefghijklmnop"}, wantErr: []string{"not a valid interface name"}},
		{name: "slash link", cfg: Settings{Address: cidr(t, "10.0.0.1/24"), Link: "a/b"}, wantErr: []string{"not a valid interface name"}},
		{name: "all wrong", cfg: Settings{MAC: mac("01:00:5e:00:00:01")}, wantErr: []string{"service address: required", "multicast bit", "service link: required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, gotMAC, err := validateConfig(tc.cfg)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if gotMAC.String() != tc.wantMAC {
					t.Fatalf("MAC = %s, want %s", gotMAC, tc.wantMAC)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"redis1", true},
		{"a.b_c-D9", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{"c1" + recordSuffix, false},
		{strings.Repeat("x", 201), false},
	} {
		err := validateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("validateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestValidateSchedule(t *testing.T) {
	for _, tc := range []struct {
		s  []time.Duration
		ok bool
	}{
		{DefaultGARPSchedule(), true},
		{nil, true},
		{[]time.Duration{0}, true},
		{[]time.Duration{-time.Millisecond}, false},
		{[]time.Duration{time.Hour}, false},
	} {
		if err := validateSchedule(tc.s); (err == nil) != tc.ok {
			t.Errorf("validateSchedule(%v) = %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
	if got := (Options{}).garpSchedule(); len(got) != 3 || got[0] != 0 || got[1] != 20*time.Millisecond || got[2] != 100*time.Millisecond {
		t.Errorf("default schedule = %v", got)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	ok := Settings{Address: cidr(t, "10.85.0.200/24"), Link: "eth0"}
	for _, tc := range []struct {
		name, cname string
		cfg         Settings
		opts        Options
		want        string
	}{
		{"relative dir", "c1", ok, Options{Dir: "run/x"}, "absolute path"},
		{"no dir", "c1", ok, Options{}, "absolute path"},
		{"bad name", "../c1", ok, Options{Dir: "/run/x"}, "name"},
		{"bad schedule", "c1", ok, Options{Dir: "/run/x", GARPSchedule: []time.Duration{-1}}, "GARP schedule"},
		{"bad config", "c1", Settings{Link: "eth0"}, Options{Dir: "/run/x"}, "service address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Create(t.Context(), tc.cname, tc.cfg, true, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
