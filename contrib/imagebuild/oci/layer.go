// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package oci builds small, deterministic, single-layer OCI images from host
// files: executables with their shared libraries, an optional static busybox
// with its applet links, and a minimal root file system skeleton.
//
// The same inputs always give the same bytes (fixed mtimes, uid/gid 0, sorted
// entries, fixed gzip header), hence the same image digest.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every entry of a layer.
var Epoch = time.Unix(0, 0).UTC()

// EntryType is the kind of a layer entry.
type EntryType int

const (
	TypeDir EntryType = iota
	TypeFile
	TypeSymlink
)

func (t EntryType) String() string {
	switch t {
	case TypeDir:
		return "dir"
	case TypeFile:
		return "file"
	case TypeSymlink:
		return "symlink"
	}
	return "?"
}

// Entry is one file system object of a layer.
type Entry struct {
	Path string // clean absolute path in the image, e.g. /usr/bin/redis-server
	Type EntryType
	Mode fs.FileMode // permission bits plus ModeSticky/ModeSetuid/ModeSetgid
	Link string      // symlink target, verbatim
	Src  string      // host file holding the content (TypeFile), or ""
	Data []byte      // literal content (TypeFile with Src == "")
}

// Layer collects entries. The zero value is not usable; call NewLayer.
type Layer struct {
	// Root is the host directory that host paths are resolved under ("/" by
	// default). Image paths are host paths relative to Root. Tests point it
	// at a fake tree.
	Root string
	// LibDirs are the directories searched for DT_NEEDED libraries (image
	// paths, i.e. relative to Root) after DT_RUNPATH/DT_RPATH.
	LibDirs []string
	// Logf, if set, reports what is added.
	Logf func(format string, args ...any)

	entries map[string]*Entry
	elfDone map[string]bool
}

// DefaultLibDirs are Debian's (multiarch) library directories for amd64, in
// the dynamic loader's default search order.
var DefaultLibDirs = []string{
	"/lib/x86_64-linux-gnu",
	"/usr/lib/x86_64-linux-gnu",
	"/lib64",
	"/usr/lib64",
	"/lib",
	"/usr/lib",
	"/usr/local/lib/x86_64-linux-gnu",
	"/usr/local/lib",
}

// NewLayer returns an empty layer resolving host files under "/".
func NewLayer() *Layer {
	return &Layer{
		Root:    "/",
		LibDirs: append([]string(nil), DefaultLibDirs...),
		entries: map[string]*Entry{},
		elfDone: map[string]bool{},
	}
}

func (l *Layer) logf(format string, args ...any) {
	if l.Logf != nil {
		l.Logf(format, args...)
	}
}

// host maps an image path to the host path under Root.
func (l *Layer) host(p string) string {
	if l.Root == "" || l.Root == "/" {
		return p
	}
	return filepath.Join(l.Root, p)
}

// cleanPath makes p a clean absolute slash path.
func cleanPath(p string) string {
	return path.Clean("/" + filepath.ToSlash(p))
}

func (l *Layer) put(e *Entry, override bool) error {
	e.Path = cleanPath(e.Path)
	if e.Path == "/" {
		return nil
	}
	if _, ok := l.entries[e.Path]; ok && !override {
		return nil // first one wins
	}
	l.entries[e.Path] = e
	return nil
}

// AddDir adds a directory (and, implicitly at write time, its parents).
func (l *Layer) AddDir(p string, mode fs.FileMode) {
	_ = l.put(&Entry{Path: p, Type: TypeDir, Mode: mode}, true)
}

// AddData adds a regular file with literal content, replacing any entry at p.
func (l *Layer) AddData(p string, data []byte, mode fs.FileMode) {
	_ = l.put(&Entry{Path: p, Type: TypeFile, Mode: mode, Data: append([]byte(nil), data...)}, true)
}

// AddSymlink adds a symlink, replacing any entry at p.
func (l *Layer) AddSymlink(p, target string) {
	_ = l.put(&Entry{Path: p, Type: TypeSymlink, Link: target, Mode: 0o777}, true)
}

// AddBase adds the minimal root file system: the usual top-level
// directories, /tmp with mode 1777, /etc/passwd and /etc/group. It does not
// add /etc/hosts or /etc/resolv.conf (the runtime provides those if needed).
func (l *Layer) AddBase() {
	for _, d := range []string{"/bin", "/dev", "/etc", "/proc", "/root", "/run", "/sys", "/usr", "/var"} {
		l.AddDir(d, 0o755)
	}
	l.AddDir("/root", 0o700)
	l.AddDir("/tmp", 0o777|fs.ModeSticky)
	l.AddDir("/var/tmp", 0o777|fs.ModeSticky)
	l.AddData("/etc/passwd", []byte(Passwd), 0o644)
	l.AddData("/etc/group", []byte(Group), 0o644)
}

// Passwd and Group are the contents of /etc/passwd and /etc/group.
const (
	Passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	Group  = "root:x:0:\nnogroup:x:65534:\n"
)

// AddBusybox adds the busybox binary at /bin/busybox and a symlink
// /bin/APPLET -> busybox for every applet. Existing entries are kept (an
// explicitly added file wins over an applet link).
func (l *Layer) AddBusybox(src string, applets []string) error {
	if err := l.AddHostFile(src, "/bin/busybox"); err != nil {
		return err
	}
	n := 0
	for _, a := range applets {
		a = strings.TrimSpace(a)
		if a == "" || a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := l.put(&Entry{Path: "/bin/" + a, Type: TypeSymlink, Link: "busybox", Mode: 0o777}, false); err != nil {
			return err
		}
		n++
	}
	l.logf("busybox: %d applets", n)
	return nil
}

// AddHostFile copies the host file src (symlinks followed) to dest in the
// image, replacing what is there. A directory is copied recursively
// (symlinks inside it are kept as symlinks). An ELF file gets its dynamic
// loader and shared libraries added too. src is a host path, not relative
// to Root.
func (l *Layer) AddHostFile(src, dest string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if dest == "" {
		abs, err := filepath.Abs(src)
		if err != nil {
			return err
		}
		dest = abs
		if l.Root != "" && l.Root != "/" {
			if rel, err := filepath.Rel(l.Root, abs); err == nil && !strings.HasPrefix(rel, "..") {
				dest = "/" + rel
			}
		}
	}
	dest = cleanPath(dest)
	if st.IsDir() {
		return l.addTree(src, dest)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file or directory", src)
	}
	_ = l.put(&Entry{Path: dest, Type: TypeFile, Mode: st.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), Src: src}, true)
	l.logf("file %s -> %s", src, dest)
	return l.addELFDeps(src)
}

func (l *Layer) addTree(src, dest string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		ip := cleanPath(path.Join(dest, filepath.ToSlash(rel)))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			l.AddDir(ip, info.Mode().Perm()|info.Mode()&fs.ModeSticky)
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			l.AddSymlink(ip, t)
		case info.Mode().IsRegular():
			_ = l.put(&Entry{Path: ip, Type: TypeFile, Mode: info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), Src: p}, true)
			if err := l.addELFDeps(p); err != nil {
				return err
			}
		default:
			l.logf("skip %s (%v)", p, info.Mode().Type())
		}
		return nil
	})
}

// addHostPath adds the object at image path p as it is on the host (under
// Root), keeping the path: a symlink in the last component is kept as a
// symlink and its target is added too; directory components that are
// symlinks on the host (merged /usr) become real directories in the image.
// Existing entries are kept.
func (l *Layer) addHostPath(p string, depth int) error {
	p = cleanPath(p)
	if depth > 40 {
		return fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	if _, ok := l.entries[p]; ok {
		return nil
	}
	hp := l.host(p)
	st, err := os.Lstat(hp)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(hp)
		if err != nil {
			return err
		}
		var tp string
		if path.IsAbs(target) {
			tp = cleanPath(target)
		} else {
			tp = cleanPath(path.Join(path.Dir(p), target))
		}
		// The lexical target must be the same file as what the host
		// resolves (it differs when ".." crosses a symlinked directory);
		// if not, copy the content instead of keeping the link.
		real, err := l.realPath(p)
		if err != nil {
			return err
		}
		a, err := os.Stat(real)
		if err != nil {
			return err
		}
		var b fs.FileInfo
		realT, errB := l.realPath(tp)
		if errB == nil {
			b, errB = os.Stat(realT)
		}
		if errB != nil || !os.SameFile(a, b) {
			_ = l.put(&Entry{Path: p, Type: TypeFile, Mode: a.Mode().Perm(), Src: real}, false)
			return l.addELFDeps(real)
		}
		_ = l.put(&Entry{Path: p, Type: TypeSymlink, Link: target, Mode: 0o777}, false)
		return l.addHostPath(tp, depth+1)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", hp)
	}
	_ = l.put(&Entry{Path: p, Type: TypeFile, Mode: st.Mode().Perm(), Src: hp}, false)
	l.logf("lib %s", p)
	return l.addELFDeps(hp)
}

// realPath resolves image path p to a host path, following every symlink
// inside Root (absolute targets are relative to Root, ".." is physical, as
// the kernel does in a chroot).
func (l *Layer) realPath(p string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(cleanPath(p), "/"), "/")
	cur := "/"
	hops := 0
	for len(parts) > 0 {
		c := parts[0]
		parts = parts[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		st, err := os.Lstat(l.host(next))
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		t, err := os.Readlink(l.host(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			cur = "/"
		}
		parts = append(strings.Split(t, "/"), parts...)
	}
	return l.host(cur), nil
}

// ELFDeps returns the dynamic loader (PT_INTERP, "" if none) and the
// DT_NEEDED names, DT_RUNPATH and DT_RPATH of the ELF file at hp. ok is
// false when the file is not ELF.
func ELFDeps(hp string) (interp string, needed, runpath []string, ok bool, err error) {
	f, err := elf.Open(hp)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", nil, nil, false, nil
		}
		return "", nil, nil, false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return "", nil, nil, true, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if f.Section(".dynamic") == nil && interp == "" {
		return "", nil, nil, true, nil
	}
	needed, _ = f.ImportedLibraries()
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			runpath = append(runpath, strings.Split(v, ":")...)
		}
	}
	return interp, needed, runpath, true, nil
}

// addELFDeps adds the loader and (recursively) the libraries of the ELF
// file at host path hp. Non-ELF files are ignored.
func (l *Layer) addELFDeps(hp string) error {
	if l.elfDone[hp] {
		return nil
	}
	l.elfDone[hp] = true
	interp, needed, runpath, ok, err := ELFDeps(hp)
	if err != nil {
		return fmt.Errorf("%s: %w", hp, err)
	}
	if !ok {
		return nil
	}
	if interp != "" {
		if err := l.addHostPath(interp, 0); err != nil {
			return fmt.Errorf("%s: loader %s: %w", hp, interp, err)
		}
	}
	origin := "/"
	if rel, err := filepath.Rel(l.host("/"), filepath.Dir(hp)); err == nil && !strings.HasPrefix(rel, "..") {
		origin = cleanPath(rel)
	}
	var dirs []string
	for _, rp := range runpath {
		rp = strings.ReplaceAll(strings.ReplaceAll(rp, "${ORIGIN}", origin), "$ORIGIN", origin)
		if rp != "" {
			dirs = append(dirs, cleanPath(rp))
		}
	}
	dirs = append(dirs, l.LibDirs...)
	for _, lib := range needed {
		found := ""
		if strings.Contains(lib, "/") {
			found = cleanPath(lib)
		} else {
			for _, d := range dirs {
				cand := path.Join(d, lib)
				real, err := l.realPath(cand)
				if err != nil {
					continue
				}
				if st, err := os.Stat(real); err == nil && st.Mode().IsRegular() && elfClassMatches(real) {
					found = cand
					break
				}
			}
		}
		if found == "" {
			return fmt.Errorf("%s: library %s not found in %v", hp, lib, dirs)
		}
		if err := l.addHostPath(found, 0); err != nil {
			return fmt.Errorf("%s: library %s: %w", hp, lib, err)
		}
	}
	return nil
}

// elfClassMatches reports whether the ELF file is 64-bit x86-64 (so that an
// i386 library in a search directory is skipped, as the loader does).
func elfClassMatches(hp string) bool {
	f, err := elf.Open(hp)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Class == elf.ELFCLASS64 && f.Machine == elf.EM_X86_64
}

// Entries returns the entries sorted by path, with every missing parent
// directory added (mode 0755). A parent that is not a directory is an error.
func (l *Layer) Entries() ([]Entry, error) {
	all := map[string]*Entry{}
	for p, e := range l.entries {
		all[p] = e
	}
	for p := range l.entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if e, ok := all[d]; ok {
				if e.Type != TypeDir {
					return nil, fmt.Errorf("%s: parent %s is a %v", p, d, e.Type)
				}
				continue
			}
			all[d] = &Entry{Path: d, Type: TypeDir, Mode: 0o755}
		}
	}
	out := make([]Entry, 0, len(all))
	for _, e := range all {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// WriteTar writes the layer as an uncompressed tar stream.
func (l *Layer) WriteTar(w io.Writer) error {
	entries, err := l.Entries()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(e.Path, "/"),
			Mode:    tarMode(e.Mode),
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		var body io.Reader
		switch e.Type {
		case TypeDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case TypeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = e.Link
			hdr.Mode = 0o777
		case TypeFile:
			hdr.Typeflag = tar.TypeReg
			if e.Src != "" {
				f, err := os.Open(e.Src)
				if err != nil {
					return err
				}
				st, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				hdr.Size = st.Size()
				if err := tw.WriteHeader(hdr); err != nil {
					f.Close()
					return err
				}
				n, err := io.Copy(tw, f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", e.Src, err)
				}
				if n != hdr.Size {
					return fmt.Errorf("%s: changed while reading", e.Src)
				}
				continue
			}
			hdr.Size = int64(len(e.Data))
			body = bytes.NewReader(e.Data)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func tarMode(m fs.FileMode) int64 {
	v := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// Blob is a content-addressed blob.
type Blob struct {
	MediaType string
	Digest    string // sha256:...
	Data      []byte
}

// Size is the blob's length.
func (b Blob) Size() int64 { return int64(len(b.Data)) }

// Digest returns "sha256:<hex>" of data.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Compressed returns the gzip layer blob and the diff ID (digest of the
// uncompressed tar).
func (l *Layer) Compressed() (Blob, string, error) {
	var raw bytes.Buffer
	if err := l.WriteTar(&raw); err != nil {
		return Blob{}, "", err
	}
	diffID := Digest(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return Blob{}, "", err
	}
	// Fixed header: no name, zero mtime, OS "unknown".
	zw.Header = gzip.Header{OS: 255}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return Blob{}, "", err
	}
	if err := zw.Close(); err != nil {
		return Blob{}, "", err
	}
	return Blob{MediaType: MediaTypeLayerGzip, Digest: Digest(gz.Bytes()), Data: gz.Bytes()}, diffID, nil
}
