// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// entry is one tar entry of a hand-made archive.
type entry struct {
	name, link, data string
	typ              byte
}

func makeTar(t testing.TB, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sandbox is a directory with root (extracted into) and outside (with a
// file and a directory no extraction may touch).
func sandbox(t testing.TB) (base, root, outside string) {
	t.Helper()
	base = t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, filepath.Join(outside, "d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	return base, root, outside
}

// snapshot describes everything under base except root: names, types,
// modes, owners, sizes, times, link targets and contents.
func snapshot(t testing.TB, base, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t) // not the access time: the snapshot reads the files
		line := fmt.Sprintf("%s %v %d ino=%d nlink=%d uid=%d gid=%d rdev=%d mtime=%v ctime=%v", p, fi.Mode(), fi.Size(),
			st.Ino, st.Nlink, st.Uid, st.Gid, st.Rdev, st.Mtim, st.Ctim)
		switch {
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestExtractConfined: hostile archives are refused or confined to the
// directory they are extracted into; nothing outside changes.
func TestExtractConfined(t *testing.T) {
	const outsideMark = "@OUT@" // replaced by the sandbox's outside directory
	for _, tc := range []struct {
		name    string
		entries []entry
		wantErr string // "" : confined, no error
		check   func(t *testing.T, root string)
	}{
		{name: "file through a symlink to outside", entries: []entry{
			{name: "a", link: outsideMark, typ: tar.TypeSymlink},
			{name: "a/x", data: "pwned", typ: tar.TypeReg},
		}, wantErr: "a/x"},
		{name: "relative symlink out", entries: []entry{
			{name: "a", link: "../outside", typ: tar.TypeSymlink},
			{name: "a/f", data: "pwned", typ: tar.TypeReg},
		}, wantErr: "a/f"},
		{name: "directory through a symlink", entries: []entry{
			{name: "a", link: outsideMark, typ: tar.TypeSymlink},
			{name: "a/d/", typ: tar.TypeDir},
		}, wantErr: "a/d"},
		{name: "dot-dot name", entries: []entry{{name: "../x", data: "pwned", typ: tar.TypeReg}}, wantErr: ".."},
		{name: "dot-dot inside a name", entries: []entry{{name: "d/../../x", data: "pwned", typ: tar.TypeReg}}, wantErr: ".."},
		{name: "absolute name", entries: []entry{{name: outsideMark + "/f", data: "pwned", typ: tar.TypeReg}}, wantErr: "absolute"},
		{name: "hard link to outside by dot-dot", entries: []entry{
			{name: "h", link: "../outside/f", typ: tar.TypeLink},
		}, wantErr: "link target"},
		{name: "hard link to outside by absolute name", entries: []entry{
			{name: "h", link: outsideMark + "/f", typ: tar.TypeLink},
		}, wantErr: "link target"},
		{name: "hard link through a symlinked directory", entries: []entry{
			{name: "a", link: outsideMark, typ: tar.TypeSymlink},
			{name: "h", link: "a/f", typ: tar.TypeLink},
		}, wantErr: "h"},
		{name: "symlink chain", entries: []entry{
			{name: "b", link: outsideMark, typ: tar.TypeSymlink},
			{name: "a", link: "b", typ: tar.TypeSymlink},
			{name: "a/f", data: "pwned", typ: tar.TypeReg},
		}, wantErr: "a/f"},
		{name: "file replacing a symlink to outside", entries: []entry{
			{name: "s", link: outsideMark + "/f", typ: tar.TypeSymlink},
			{name: "s", data: "inside", typ: tar.TypeReg},
		}, check: func(t *testing.T, root string) {
			if b, err := os.ReadFile(filepath.Join(root, "s")); err != nil || string(b) != "inside" {
				t.Errorf("s = %q, %v; want a file of its own", b, err)
			}
		}},
		{name: "hard link to a symlink, then written", entries: []entry{
			{name: "s", link: outsideMark + "/f", typ: tar.TypeSymlink},
			{name: "h", link: "s", typ: tar.TypeLink},
			{name: "h", data: "inside", typ: tar.TypeReg},
		}, check: func(t *testing.T, root string) {
			if l, err := os.Readlink(filepath.Join(root, "s")); err != nil || !strings.HasSuffix(l, "/outside/f") {
				t.Errorf("s -> %q, %v", l, err)
			}
		}},
		{name: "FIFO replacing a symlink to outside", entries: []entry{
			{name: "s", link: outsideMark + "/d", typ: tar.TypeSymlink},
			{name: "s", typ: tar.TypeFifo},
		}, check: func(t *testing.T, root string) {
			if fi, err := os.Lstat(filepath.Join(root, "s")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
				t.Errorf("s: %v, %v; want a FIFO", fi, err)
			}
		}},
		{name: "directory over a symlink", entries: []entry{
			{name: "s", link: outsideMark + "/d", typ: tar.TypeSymlink},
			{name: "s/", typ: tar.TypeDir},
		}, wantErr: "s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, root, outside := sandbox(t)
			for i := range tc.entries {
				tc.entries[i].name = strings.ReplaceAll(tc.entries[i].name, outsideMark, outside)
				tc.entries[i].link = strings.ReplaceAll(tc.entries[i].link, outsideMark, outside)
			}
			before := snapshot(t, base, root)
			err := extractTree(bytes.NewReader(makeTar(t, tc.entries)), root)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("extract: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("extract succeeded, want an error naming %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not name %q", err, tc.wantErr)
			}
			if after := snapshot(t, base, root); after != before {
				t.Errorf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if tc.check != nil {
				tc.check(t, root)
			}
		})
	}
}

// FuzzExtractTree: whatever the bytes, extraction creates and changes
// nothing outside the directory it is given.
func FuzzExtractTree(f *testing.F) {
	f.Add(makeTar(f, []entry{{name: "d/", typ: tar.TypeDir}, {name: "d/f", data: "x", typ: tar.TypeReg}}))
	f.Add(makeTar(f, []entry{{name: "a", link: "../outside", typ: tar.TypeSymlink}, {name: "a/f", data: "x", typ: tar.TypeReg}}))
	f.Add(makeTar(f, []entry{{name: "h", link: "../outside/f", typ: tar.TypeLink}}))
	f.Add(makeTar(f, []entry{{name: "p", typ: tar.TypeFifo}, {name: "q", link: "p", typ: tar.TypeLink}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		base, root, _ := sandbox(t)
		before := snapshot(t, base, root)
		_ = extractTree(bytes.NewReader(data), root) // an error is fine; an escape is not
		if after := snapshot(t, base, root); after != before {
			t.Fatalf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}
