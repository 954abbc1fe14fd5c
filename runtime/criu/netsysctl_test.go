// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/netnstest"
	"github.com/iorrc/rrc/test/prereq"
)

// TestMoveNetSysctls: the spec's net.* sysctls are written in the given
// namespace (not the test's) and leave the spec; the others stay, and so
// does the rest of the spec.
func TestMoveNetSysctls(t *testing.T) {
	prereq.Commands(t, "ip")
	path := netnstest.Scratch(t)
	bundle := t.TempDir()
	spec := `{"ociVersion":"1.2.1","x-unknown":1,"linux":{"sysctl":{"net.ipv4.ip_unprivileged_port_start":"0","net.ipv4.tcp_keepalive_time":"77","kernel.msgmax":"9000"},"namespaces":[{"type":"network"}]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func(k string) string {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	ownBefore := read("net.ipv4.tcp_keepalive_time")
	applied, err := MoveNetSysctls(bundle, path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"net.ipv4.ip_unprivileged_port_start=0", "net.ipv4.tcp_keepalive_time=77"}; !slices.Equal(applied, want) {
		t.Errorf("applied %q, want %q", applied, want)
	}
	var inNs string
	if err := launch.InNetns(path, func() error { inNs = read("net.ipv4.tcp_keepalive_time"); return nil }); err != nil {
		t.Fatal(err)
	}
	if inNs != "77" {
		t.Errorf("tcp_keepalive_time in the namespace: %s, want 77", inNs)
	}
	if own := read("net.ipv4.tcp_keepalive_time"); own != ownBefore {
		t.Errorf("the test's own namespace changed: tcp_keepalive_time %s, was %s", own, ownBefore)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Unknown int `json:"x-unknown"`
		Linux   struct {
			Sysctl     map[string]string
			Namespaces []any
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Linux.Sysctl) != 1 || got.Linux.Sysctl["kernel.msgmax"] != "9000" || got.Unknown != 1 || len(got.Linux.Namespaces) != 1 {
		t.Errorf("spec after: %s", b)
	}
}
