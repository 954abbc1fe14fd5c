// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverlayMountFromMountinfo(t *testing.T) {
	const mi = `83 27 0:41 / /run/x/rootfs rw,relatime - overlay overlay rw,lowerdir=/l/2/fs:/l/1/fs,upperdir=/l/3/fs,workdir=/l/3/work,uuid=on
84 27 0:42 / /run/with\040space rw - overlay overlay rw,lowerdir=/a,upperdir=/u\040x,workdir=/w
85 27 0:43 / /run/tmp rw - tmpfs tmpfs rw
`
	tests := []struct {
		rootfs    string
		wantUpper string
		wantLower []string
		wantErr   bool
	}{
		{rootfs: "/run/x/rootfs", wantUpper: "/l/3/fs", wantLower: []string{"/l/2/fs", "/l/1/fs"}},
		{rootfs: "/run/with space", wantUpper: "/u x", wantLower: []string{"/a"}},
		{rootfs: "/run/tmp", wantErr: true},
		{rootfs: "/nowhere", wantErr: true},
	}
	for _, tt := range tests {
		om, err := overlayMountFrom(strings.NewReader(mi), tt.rootfs)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v", tt.rootfs, err)
			continue
		}
		if om.Upper != tt.wantUpper || strings.Join(om.Lower, ":") != strings.Join(tt.wantLower, ":") {
			t.Errorf("%s: got %+v", tt.rootfs, om)
		}
	}
}

// TestTreeTarRoundTrip archives a small tree and unpacks it elsewhere.
func TestTreeTarRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc/sub"), 0o750))
	must(os.WriteFile(filepath.Join(src, "etc/sub/file"), []byte("content"), 0o640))
	must(os.Symlink("sub/file", filepath.Join(src, "etc/link")))
	archive := filepath.Join(t.TempDir(), "a.tar")
	n, err := writeTreeTar(archive, src, true)
	must(err)
	if n == 0 {
		t.Fatal("empty archive")
	}
	must(extractTreeTar(archive, dst))
	b, err := os.ReadFile(filepath.Join(dst, "etc/sub/file"))
	if err != nil || string(b) != "content" {
		t.Fatalf("file = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "etc/link")); err != nil || l != "sub/file" {
		t.Fatalf("link = %q, %v", l, err)
	}
	fi, err := os.Stat(filepath.Join(dst, "etc/sub"))
	must(err)
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("dir mode = %v", fi.Mode())
	}
}

func TestSetBundleAnnotation(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, []byte(`{"ociVersion":"1.0.2","annotations":{"a":"b"},"root":{"path":"rootfs"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setBundleAnnotation(dir, "org.criu.config", "/x/criu.conf"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, want := range []string{`"org.criu.config":"/x/criu.conf"`, `"a":"b"`, `"root":{"path":"rootfs"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config.json %s lacks %s", b, want)
		}
	}
}
