// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/iorrc/rrc/test/prereq"
)

type hdr struct {
	Name string
	Type byte
	Mode int64
	Link string
	Body string
}

func readTar(t *testing.T, r io.Reader) []hdr {
	t.Helper()
	var out []hdr
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(Epoch) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: not normalized: mtime %v uid %d gid %d %q %q", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, hdr{h.Name, h.Typeflag, h.Mode, h.Linkname, string(b)})
	}
}

func TestNormalizeRef(t *testing.T) {
	cases := []struct {
		in, full, tag string
		err           bool
	}{
		{"rrc.local/redis:7", "rrc.local/redis:7", "7", false},
		{"rrc.local/busybox", "rrc.local/busybox:latest", "latest", false},
		{"localhost:5000/x", "localhost:5000/x:latest", "latest", false},
		{"localhost:5000/x:v1", "localhost:5000/x:v1", "v1", false},
		{"a/b@sha256:abc", "a/b@sha256:abc", "sha256:abc", false},
		{"", "", "", true},
		{"x:", "", "", true},
		{"has space", "", "", true},
	}
	for _, c := range cases {
		full, tag, err := NormalizeRef(c.in)
		if (err != nil) != c.err || full != c.full || tag != c.tag {
			t.Errorf("NormalizeRef(%q) = %q, %q, %v; want %q, %q, err=%v", c.in, full, tag, err, c.full, c.tag, c.err)
		}
	}
}

func TestBaseLayerTar(t *testing.T) {
	l := NewLayer()
	l.AddBase()
	l.AddData("/etc/motd", []byte("hi\n"), 0o600)
	l.AddSymlink("/usr/bin/sh", "/bin/busybox")
	l.AddDir("/srv/www/data", 0o750)
	var buf bytes.Buffer
	if err := l.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	got := readTar(t, &buf)
	want := []hdr{
		{"bin/", tar.TypeDir, 0o755, "", ""},
		{"dev/", tar.TypeDir, 0o755, "", ""},
		{"etc/", tar.TypeDir, 0o755, "", ""},
		{"etc/group", tar.TypeReg, 0o644, "", Group},
		{"etc/motd", tar.TypeReg, 0o600, "", "hi\n"},
		{"etc/passwd", tar.TypeReg, 0o644, "", Passwd},
		{"proc/", tar.TypeDir, 0o755, "", ""},
		{"root/", tar.TypeDir, 0o700, "", ""},
		{"run/", tar.TypeDir, 0o755, "", ""},
		{"srv/", tar.TypeDir, 0o755, "", ""},
		{"srv/www/", tar.TypeDir, 0o755, "", ""},
		{"srv/www/data/", tar.TypeDir, 0o750, "", ""},
		{"sys/", tar.TypeDir, 0o755, "", ""},
		{"tmp/", tar.TypeDir, 0o1777, "", ""},
		{"usr/", tar.TypeDir, 0o755, "", ""},
		{"usr/bin/", tar.TypeDir, 0o755, "", ""},
		{"usr/bin/sh", tar.TypeSymlink, 0o777, "/bin/busybox", ""},
		{"var/", tar.TypeDir, 0o755, "", ""},
		{"var/tmp/", tar.TypeDir, 0o1777, "", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tar entries:\n got %v\nwant %v", got, want)
	}
}

func TestParentMustBeDir(t *testing.T) {
	l := NewLayer()
	l.AddSymlink("/lib", "usr/lib")
	l.AddData("/lib/x", nil, 0o644)
	if _, err := l.Entries(); err == nil {
		t.Fatal("want error for a file under a symlink")
	}
}

// fakeRoot makes a host tree with merged /usr, versioned libraries and
// symlinks of every kind.
func fakeRoot(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	files := map[string]string{
		"usr/lib/x/libfoo.so.1.2": "foo",
		"usr/lib/x/ld-real.so":    "loader",
		"usr/opt/bar":             "bar",
		"data/tree/a.txt":         "A",
		"data/tree/sub/b.txt":     "B",
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Join(r, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r, p), []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"lib":                   "usr/lib",
		"usr/lib/x/libfoo.so.1": "libfoo.so.1.2",
		"lib64/ld.so":           "/lib/x/ld-real.so",
		"usr/lib/x/bar":         "../../opt/bar", // /lib/x/bar lexically -> /opt/bar, really /usr/opt/bar
		"usr/lib/x/loop1":       "loop2",
		"usr/lib/x/loop2":       "loop1",
		"data/tree/link":        "a.txt",
	}
	for p, target := range links {
		if err := os.MkdirAll(filepath.Join(r, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(r, p)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestAddHostPath(t *testing.T) {
	root := fakeRoot(t)
	type ent struct {
		Type EntryType
		Link string
		Src  string // relative to root
	}
	cases := []struct {
		name string
		path string
		want map[string]ent
		err  bool
	}{
		{"versioned library keeps its link", "/lib/x/libfoo.so.1", map[string]ent{
			"/lib/x/libfoo.so.1":   {TypeSymlink, "libfoo.so.1.2", ""},
			"/lib/x/libfoo.so.1.2": {TypeFile, "", "lib/x/libfoo.so.1.2"},
		}, false},
		{"absolute link across dirs", "/lib64/ld.so", map[string]ent{
			"/lib64/ld.so":      {TypeSymlink, "/lib/x/ld-real.so", ""},
			"/lib/x/ld-real.so": {TypeFile, "", "lib/x/ld-real.so"},
		}, false},
		{"dotdot across a symlinked dir is copied", "/lib/x/bar", map[string]ent{
			"/lib/x/bar": {TypeFile, "", "usr/opt/bar"},
		}, false},
		{"plain file", "/usr/opt/bar", map[string]ent{
			"/usr/opt/bar": {TypeFile, "", "usr/opt/bar"},
		}, false},
		{"symlink loop", "/lib/x/loop1", nil, true},
		{"missing", "/lib/x/nope", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := NewLayer()
			l.Root = root
			err := l.addHostPath(c.path, 0)
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want err=%v", err, c.err)
			}
			if c.err {
				return
			}
			got := map[string]ent{}
			for p, e := range l.entries {
				src := ""
				if e.Src != "" {
					rel, _ := filepath.Rel(root, e.Src)
					src = rel
				}
				got[p] = ent{e.Type, e.Link, src}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("entries:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestAddHostFileTreeAndOverride(t *testing.T) {
	root := fakeRoot(t)
	l := NewLayer()
	l.Root = root
	l.AddData("/opt/tree/a.txt", []byte("old"), 0o644)
	if err := l.AddHostFile(filepath.Join(root, "data/tree"), "/opt/tree"); err != nil {
		t.Fatal(err)
	}
	// A file argument follows symlinks and replaces what is there.
	if err := l.AddHostFile(filepath.Join(root, "lib/x/libfoo.so.1"), "/usr/local/lib/foo"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	got := map[string]hdr{}
	for _, h := range readTar(t, &buf) {
		got[h.Name] = h
	}
	want := map[string]hdr{
		"opt/tree/a.txt":     {"opt/tree/a.txt", tar.TypeReg, 0o755, "", "A"},
		"opt/tree/sub/b.txt": {"opt/tree/sub/b.txt", tar.TypeReg, 0o755, "", "B"},
		"opt/tree/link":      {"opt/tree/link", tar.TypeSymlink, 0o777, "a.txt", ""},
		"usr/local/lib/foo":  {"usr/local/lib/foo", tar.TypeReg, 0o755, "", "foo"},
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %+v, want %+v", name, got[name], w)
		}
	}
}

func TestAddBusybox(t *testing.T) {
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bb, []byte("not really busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := NewLayer()
	l.AddData("/bin/sh", []byte("mine"), 0o755) // explicit file wins over the applet
	if err := l.AddBusybox(bb, []string{"sh", "ls", "busybox", "", "bad/name", "[["}); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Path+" "+e.Type.String()+" "+e.Link)
	}
	want := []string{"/bin dir ", "/bin/[[ symlink busybox", "/bin/busybox file ", "/bin/ls symlink busybox", "/bin/sh file "}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestELFDeps(t *testing.T) {
	bin := "/usr/bin/env"
	prereq.Path(t, bin, "coreutils")
	interp, needed, _, ok, err := ELFDeps(bin)
	if err != nil || !ok {
		t.Fatalf("ELFDeps: ok=%v err=%v", ok, err)
	}
	if interp == "" || !contains(needed, "libc.so.6") {
		t.Fatalf("interp %q needed %v", interp, needed)
	}
	// Not ELF.
	f := filepath.Join(t.TempDir(), "script")
	_ = os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755)
	if _, _, _, ok, err := ELFDeps(f); ok || err != nil {
		t.Fatalf("script: ok=%v err=%v", ok, err)
	}
	// The host binary gets its loader and libc, under the names the
	// loader looks for.
	l := NewLayer()
	if err := l.AddHostFile(bin, ""); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range es {
		paths = append(paths, e.Path)
	}
	for _, p := range []string{bin, interp} {
		if !contains(paths, p) {
			t.Errorf("%s missing from %v", p, paths)
		}
	}
	libc := false
	for _, p := range paths {
		if strings.HasSuffix(p, "/libc.so.6") {
			libc = true
		}
	}
	if !libc {
		t.Errorf("libc.so.6 missing from %v", paths)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestCompressedIsDeterministic(t *testing.T) {
	build := func() (Blob, string) {
		l := NewLayer()
		l.AddBase()
		l.AddData("/hello", []byte("world"), 0o644)
		b, d, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		return b, d
	}
	b1, d1 := build()
	b2, d2 := build()
	if b1.Digest != b2.Digest || d1 != d2 || !bytes.Equal(b1.Data, b2.Data) {
		t.Fatal("same inputs, different layer")
	}
	zr, err := gzip.NewReader(bytes.NewReader(b1.Data))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header not fixed: %q %v", zr.Name, zr.ModTime)
	}
	raw, _ := io.ReadAll(zr)
	if Digest(raw) != d1 {
		t.Errorf("diff ID %s is not the digest of the tar %s", d1, Digest(raw))
	}
	if Digest(b1.Data) != b1.Digest || b1.MediaType != MediaTypeLayerGzip {
		t.Errorf("blob digest/media type wrong: %+v", b1.Digest)
	}
}

func TestArchive(t *testing.T) {
	l := NewLayer()
	l.AddBase()
	layer, diffID, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		img      Image
		full     string
		tag      string
		env      []string
		wd       string
		wantCmd  []string
		wantEntr []string
	}{
		{Image{Ref: "rrc.local/redis:7", Entrypoint: []string{"/usr/bin/redis-server"}, Cmd: []string{"--save", ""}},
			"rrc.local/redis:7", "7", []string{DefaultPath}, "/", []string{"--save", ""}, []string{"/usr/bin/redis-server"}},
		{Image{Ref: "rrc.local/busybox", Env: []string{"A=1"}, WorkingDir: "/tmp", Cmd: []string{"/bin/sh"}},
			"rrc.local/busybox:latest", "latest", []string{DefaultPath, "A=1"}, "/tmp", []string{"/bin/sh"}, nil},
		{Image{Ref: "x/y:z", Env: []string{"PATH=/bin"}},
			"x/y:z", "z", []string{"PATH=/bin"}, "/", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.full, func(t *testing.T) {
			a, err := NewArchive(c.img, layer, diffID)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := a.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{}
			var names []string
			for _, h := range readTar(t, bytes.NewReader(buf.Bytes())) {
				names = append(names, h.Name)
				if h.Type == tar.TypeReg {
					files[h.Name] = []byte(h.Body)
				}
			}
			for name, data := range files {
				if strings.HasPrefix(name, "blobs/sha256/") && "sha256:"+strings.TrimPrefix(name, "blobs/sha256/") != Digest(data) {
					t.Errorf("%s: content digest %s", name, Digest(data))
				}
			}
			if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
				t.Errorf("oci-layout: %s", files["oci-layout"])
			}
			var idx Index
			mustUnmarshal(t, files["index.json"], &idx)
			if idx.SchemaVersion != 2 || idx.MediaType != MediaTypeIndex || len(idx.Manifests) != 1 {
				t.Fatalf("index: %+v", idx)
			}
			md := idx.Manifests[0]
			if md.Annotations[AnnotationImageName] != c.full || md.Annotations[AnnotationRefName] != c.tag {
				t.Errorf("annotations: %v", md.Annotations)
			}
			if md.Platform == nil || *md.Platform != (Platform{"amd64", "linux"}) || md.MediaType != MediaTypeManifest {
				t.Errorf("manifest descriptor: %+v", md)
			}
			manData := files[blobPath(md.Digest)]
			if int64(len(manData)) != md.Size {
				t.Fatalf("manifest size %d != %d", len(manData), md.Size)
			}
			var man Manifest
			mustUnmarshal(t, manData, &man)
			if len(man.Layers) != 1 || man.Layers[0].Digest != layer.Digest || man.Layers[0].Size != layer.Size() || man.Layers[0].MediaType != MediaTypeLayerGzip {
				t.Errorf("layers: %+v", man.Layers)
			}
			if !bytes.Equal(files[blobPath(layer.Digest)], layer.Data) {
				t.Error("layer blob differs")
			}
			cfgData := files[blobPath(man.Config.Digest)]
			if int64(len(cfgData)) != man.Config.Size || man.Config.MediaType != MediaTypeConfig {
				t.Fatalf("config descriptor %+v", man.Config)
			}
			var cfg Config
			mustUnmarshal(t, cfgData, &cfg)
			if cfg.Architecture != "amd64" || cfg.OS != "linux" || cfg.RootFS.Type != "layers" || !reflect.DeepEqual(cfg.RootFS.DiffIDs, []string{diffID}) {
				t.Errorf("config: %+v", cfg)
			}
			if !reflect.DeepEqual(cfg.Config.Env, c.env) || cfg.Config.WorkingDir != c.wd ||
				!reflect.DeepEqual(cfg.Config.Cmd, c.wantCmd) || !reflect.DeepEqual(cfg.Config.Entrypoint, c.wantEntr) {
				t.Errorf("container config: %+v", cfg.Config)
			}
			var docker []DockerManifestEntry
			mustUnmarshal(t, files["manifest.json"], &docker)
			if len(docker) != 1 || docker[0].RepoTags[0] != c.full || docker[0].Config != blobPath(man.Config.Digest) {
				t.Errorf("manifest.json: %+v", docker)
			}
			// Same input, same bytes.
			a2, _ := NewArchive(c.img, layer, diffID)
			var buf2 bytes.Buffer
			_, _ = a2.WriteTo(&buf2)
			if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
				t.Error("archive not deterministic")
			}
			if names[0] != "blobs/" || !contains(names, "index.json") {
				t.Errorf("names: %v", names)
			}
		})
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

func TestTarMode(t *testing.T) {
	cases := []struct {
		m    fs.FileMode
		want int64
	}{
		{0o755, 0o755},
		{0o777 | fs.ModeSticky, 0o1777},
		{0o755 | fs.ModeSetuid, 0o4755},
		{0o2755&0o777 | fs.ModeSetgid, 0o2755},
	}
	for _, c := range cases {
		if got := tarMode(c.m); got != c.want {
			t.Errorf("tarMode(%v) = %o, want %o", c.m, got, c.want)
		}
	}
}
