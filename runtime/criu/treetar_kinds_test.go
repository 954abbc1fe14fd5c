// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTreeTarRoundTripKinds archives a tree with every kind of file a
// writable layer or a tmpfs can hold and checks what comes back: sockets
// are left out, the rest is the same (type, content, links, holes,
// extended attributes, long names).
func TestTreeTarRoundTripKinds(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(src, "tmp"), 0o777|fs.ModeSticky))
	l, err := net.Listen("unix", filepath.Join(src, "tmp/x.sock"))
	must(err)
	defer l.Close()
	must(unix.Mkfifo(filepath.Join(src, "tmp/fifo"), 0o640))
	must(os.WriteFile(filepath.Join(src, "a"), []byte("linked"), 0o644))
	must(os.Link(filepath.Join(src, "a"), filepath.Join(src, "tmp/b")))
	sparse := filepath.Join(src, "sparse")
	f, err := os.Create(sparse)
	must(err)
	_, err = f.WriteAt([]byte("end"), 8<<20)
	must(errors.Join(err, f.Close()))
	long := strings.Repeat("n", 200)
	deep := filepath.Join(strings.Repeat("d", 60), strings.Repeat("e", 60))
	must(os.MkdirAll(filepath.Join(src, deep), 0o755))
	must(os.WriteFile(filepath.Join(src, long), []byte("long"), 0o600))
	must(os.WriteFile(filepath.Join(src, deep, long), []byte("deep"), 0o600))
	// trusted.* needs root; user.* needs a file system that takes them.
	xattr := "user.rrc-test"
	if os.Geteuid() == 0 {
		xattr = "trusted.rrc-test"
		must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(os.Chmod(filepath.Join(src, "null"), 0o666))
		must(unix.Mknod(filepath.Join(src, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))))
	}
	must(unix.Lsetxattr(filepath.Join(src, "a"), xattr, []byte("v\x00\xff"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "tmp"), xattr, []byte("dir"), 0))

	archive := filepath.Join(t.TempDir(), "a.tar")
	_, err = writeTreeTar(archive, src, true)
	must(err)
	must(extractTreeTar(archive, dst))

	if _, err := os.Lstat(filepath.Join(dst, "tmp/x.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket: %v, want it left out", err)
	}
	type want struct {
		name string
		mode fs.FileMode // type and permission bits
		data string      // regular files
		rdev uint64      // devices
	}
	wants := []want{
		{name: "tmp", mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{name: "tmp/fifo", mode: fs.ModeNamedPipe | 0o640},
		{name: "a", mode: 0o644, data: "linked"},
		{name: "tmp/b", mode: 0o644, data: "linked"},
		{name: long, mode: 0o600, data: "long"},
		{name: filepath.Join(deep, long), mode: 0o600, data: "deep"},
	}
	if os.Geteuid() == 0 {
		wants = append(wants, want{name: "null", mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, rdev: unix.Mkdev(1, 3)},
			want{name: "blk", mode: fs.ModeDevice | 0o600, rdev: unix.Mkdev(7, 200)})
	}
	for _, w := range wants {
		p := filepath.Join(dst, w.name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", w.name, err)
			continue
		}
		if fi.Mode() != w.mode {
			t.Errorf("%s: mode %v, want %v", w.name, fi.Mode(), w.mode)
		}
		if fi.Mode().IsRegular() {
			if b, err := os.ReadFile(p); err != nil || string(b) != w.data {
				t.Errorf("%s: %q, %v; want %q", w.name, b, err, w.data)
			}
		}
		if w.rdev != 0 && fi.Sys().(*syscall.Stat_t).Rdev != w.rdev {
			t.Errorf("%s: device %#x, want %#x", w.name, fi.Sys().(*syscall.Stat_t).Rdev, w.rdev)
		}
	}
	a, errA := os.Stat(filepath.Join(dst, "a"))
	b, errB := os.Stat(filepath.Join(dst, "tmp/b"))
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		t.Errorf("a and tmp/b are not one file: %v, %v", errA, errB)
	}
	for name, v := range map[string]string{"a": "v\x00\xff", "tmp": "dir"} {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(dst, name), xattr, buf)
		if err != nil || string(buf[:n]) != v {
			t.Errorf("%s: xattr %s = %q, %v; want %q", name, xattr, buf[:max(n, 0)], err, v)
		}
	}
	got, err := os.ReadFile(filepath.Join(dst, "sparse"))
	must(err)
	if want := append(make([]byte, 8<<20), "end"...); !bytes.Equal(got, want) {
		t.Errorf("sparse file: %d bytes, content differs", len(got))
	}
	fi, err := os.Stat(filepath.Join(dst, "sparse"))
	must(err)
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used >= 1<<20 {
		t.Errorf("sparse file takes %d bytes on disk, want its holes kept", used)
	}
}
