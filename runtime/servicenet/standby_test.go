// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/iorrc/rrc/test/prereq"
)

// TestStandbyServiceRoutes checks, in a scratch namespace, that a down
// service link has no route to a client, that PrepareRestore gives one
// through lo (with the link still down), and that Promote brings the link
// up and leaves only the link's own route.
func TestStandbyServiceRoutes(t *testing.T) {
	prereq.Root(t, "network namespaces")
	prereq.Commands(t, "ip")
	name := fmt.Sprintf("rrcsn-sb-%d", os.Getpid())
	ipns := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
		{"addr", "add", "10.87.0.200/24", "dev", "eth0"},
		{"link", "set", "peer0", "up"},
	} {
		if out, err := ipns(args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	_, prefix, _ := net.ParseCIDR("10.87.0.200/24")
	up := false
	s := StandbyService{NetNS: "/run/netns/" + name, Prefix: prefix, Up: func(context.Context) error {
		_, err := ipns("link", "set", "eth0", "up")
		up = err == nil
		return err
	}}
	routeDev := func() string {
		out, err := ipns("route", "get", "10.87.0.100")
		if err != nil {
			return "unreachable"
		}
		f := strings.Fields(out)
		for i := range f[:len(f)-1] {
			if f[i] == "dev" {
				return f[i+1]
			}
		}
		return out
	}
	if d := routeDev(); d != "unreachable" {
		t.Fatalf("standby (link down): route via %s, want none", d)
	}
	ctx := context.Background()
	if err := s.PrepareRestore(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareRestore(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	if d := routeDev(); d != "lo" || up {
		t.Fatalf("prepared: route via %s (link up %v), want lo with the link down", d, up)
	}
	if err := s.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if d := routeDev(); d != "eth0" || !up {
		t.Fatalf("promoted: route via %s, want eth0", d)
	}
	if out, _ := ipns("route", "show", "dev", "lo"); strings.TrimSpace(out) != "" {
		t.Errorf("temporary route left behind: %s", out)
	}

	// An adopted namespace (no one prefix): every destination, IPv4 and
	// IPv6, goes through lo during the restore; nothing is left after.
	all := StandbyService{NetNS: s.NetNS, Up: func(context.Context) error { return nil }}
	if err := all.PrepareRestore(ctx); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.1", "2001:db8::1"} {
		if out, err := ipns("route", "get", dst); err != nil || !strings.Contains(out, "dev lo") {
			t.Errorf("adopted, prepared: route to %s: %q, %v; want dev lo", dst, out, err)
		}
	}
	if err := all.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out, _ := exec.Command("ip", "-n", name, fam, "route", "show", "dev", "lo").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
			t.Errorf("adopted: temporary route left behind: %s", out)
		}
	}
}
