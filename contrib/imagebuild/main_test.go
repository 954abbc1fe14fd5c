// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/iorrc/rrc/test/prereq"
)

func TestSplitArgs(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"--bind,0.0.0.0,--save,,--appendonly,no", []string{"--bind", "0.0.0.0", "--save", "", "--appendonly", "no"}},
		{",", []string{"", ""}},
	}
	for _, c := range cases {
		if got := splitArgs(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("splitArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseFileArg(t *testing.T) {
	cases := []struct {
		in, src, dest string
		err           bool
	}{
		{"/usr/bin/redis-server", "/usr/bin/redis-server", "/usr/bin/redis-server", false},
		{"/usr/bin/redis-server:/bin/rs", "/usr/bin/redis-server", "/bin/rs", false},
		{"/x:", "/x", "/x", false},
		{"/x:rel", "", "", true},
		{":/y", "", "", true},
	}
	for _, c := range cases {
		src, dest, err := parseFileArg(c.in)
		if (err != nil) != c.err || (!c.err && (src != c.src || dest != c.dest)) {
			t.Errorf("parseFileArg(%q) = %q, %q, %v", c.in, src, dest, err)
		}
	}
}

// TestRun builds a busybox image with an extra file through the CLI code
// path, twice, and checks the archive.
func TestRun(t *testing.T) {
	const bb = "/bin/busybox"
	prereq.Path(t, bb, "busybox-static")
	dir := t.TempDir()
	extra := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(extra, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	out1, out2 := filepath.Join(dir, "1.tar"), filepath.Join(dir, "sub", "2.tar")
	for _, out := range []string{out1, out2} {
		if err := run("rrc.local/test:1", out, "/bin/sh", []string{"-c,echo hi"}, []string{"A=B"}, []string{"k=v"}, "/", "", true, bb, false, []string{extra + ":/etc/hello.txt"}); err != nil {
			t.Fatal(err)
		}
	}
	b1, _ := os.ReadFile(out1)
	b2, _ := os.ReadFile(out2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("two builds differ")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b1))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	var idx struct {
		Manifests []struct {
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.Manifests[0].Annotations["io.containerd.image.name"] != "rrc.local/test:1" {
		t.Errorf("index: %s", files["index.json"])
	}
	// Find the layer (the largest blob) and look for busybox and the file.
	var layer []byte
	for name, data := range files {
		if strings.HasPrefix(name, "blobs/") && len(data) > len(layer) {
			layer = data
		}
	}
	zr, err := gzipReader(layer)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	lt := tar.NewReader(zr)
	for {
		h, err := lt.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h.Linkname
	}
	for _, name := range []string{"bin/busybox", "bin/sh", "etc/hello.txt", "etc/passwd", "tmp/"} {
		if _, ok := seen[name]; !ok {
			t.Errorf("layer lacks %s", name)
		}
	}
	if seen["bin/sh"] != "busybox" {
		t.Errorf("bin/sh -> %q", seen["bin/sh"])
	}
}

func gzipReader(b []byte) (io.Reader, error) { return gzip.NewReader(bytes.NewReader(b)) }
