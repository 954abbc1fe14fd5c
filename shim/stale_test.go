// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/test/prereq"
)

func TestRemoveDeadSocket(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dead := filepath.Join(dir, "dead")
	dl, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	dl.(*net.UnixListener).SetUnlinkOnClose(false)
	dl.Close() // the socket file stays, nobody listens: a killed shim's
	for _, tc := range []struct {
		name, address string
		removed       bool
		exists        string // a path that must still exist afterwards
	}{
		{"served socket kept", "unix://" + live, false, live},
		{"dead socket removed", "unix://" + dead, true, ""},
		{"already gone", "unix://" + filepath.Join(dir, "none"), false, ""},
		{"no address recorded", "", false, live},
		{"abstract socket: nothing on disk", "@abstract", false, live},
	} {
		t.Run(tc.name, func(t *testing.T) {
			removed, err := removeDeadSocket(tc.address)
			if err != nil || removed != tc.removed {
				t.Fatalf("removeDeadSocket(%q) = %v, %v; want %v", tc.address, removed, err, tc.removed)
			}
			if tc.exists != "" {
				if _, err := os.Stat(tc.exists); err != nil {
					t.Errorf("%s removed: %v", tc.exists, err)
				}
			}
		})
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("dead socket still there: %v", err)
	}
}

func TestShimAddress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"containerd 2: bootstrap.json", map[string]string{"bootstrap.json": `{"version":3,"address":"unix:///run/containerd/s/abc","protocol":"ttrpc"}`}, "unix:///run/containerd/s/abc"},
		{"older: address file", map[string]string{"address": "unix:///run/containerd/s/def"}, "unix:///run/containerd/s/def"},
		{"bootstrap.json wins", map[string]string{"bootstrap.json": `{"address":"unix:///a"}`, "address": "unix:///b"}, "unix:///a"},
		{"unreadable bootstrap.json: address file", map[string]string{"bootstrap.json": `{`, "address": "unix:///b"}, "unix:///b"},
		{"nothing recorded", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, c := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(dir)
			if got := shimAddress(); got != tc.want {
				t.Errorf("shimAddress() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUnmountUnder: what a restore cut short left mounted under the work
// dir (tmpfs mounts, one inside another) goes; a mount beside it stays.
func TestUnmountUnder(t *testing.T) {
	prereq.Root(t, "tmpfs mounts")
	dir := t.TempDir()
	work, beside := filepath.Join(dir, "work"), filepath.Join(dir, "work-other")
	inner := filepath.Join(work, "restore", "rrc-tmpfs-dev")
	for _, d := range []string{inner, beside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(p string) {
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, ""); err != nil {
			t.Fatalf("mount %s: %v", p, err)
		}
	}
	mount(inner)
	if err := os.MkdirAll(filepath.Join(inner, "shm"), 0o755); err != nil {
		t.Fatal(err)
	}
	mount(filepath.Join(inner, "shm"))
	mount(beside)
	defer func() {
		if err := unix.Unmount(beside, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", beside, err)
		}
	}()
	if err := unmountUnder(work); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), work+"/") {
		t.Errorf("mounts under %s left:\n%s", work, b)
	}
	if !strings.Contains(string(b), beside+" ") {
		t.Errorf("the mount beside the work dir, %s, was unmounted too", beside)
	}
}
