// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// paxXattr prefixes an extended attribute in an entry's PAX records (the
// convention GNU tar and Go's archive/tar read).
const paxXattr = "SCHILY.xattr."

// writeTreeTar archives the directory tree at root into path (uncompressed:
// it runs while the container is frozen, and on tmpfs compression costs more
// than it saves): directories, regular files (a second name of a file is a
// hard link entry), symlinks, FIFOs, character and block devices (overlay
// whiteouts, /dev nodes) and every extended attribute (the overlay opaque
// mark among them). Names longer than ustar holds go into PAX records.
// Sockets are left out: tar has no type for them, and a program that is
// restored binds its sockets again (CRIU restores the open ones). The root
// itself is the entry ".". With oneFS, mounts below root are not entered;
// their mount points are recorded as empty directories or files. It returns
// the archive's size.
func writeTreeTar(path, root string, oneFS bool) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	tw := tar.NewWriter(bw)
	var rootDev uint64
	if fi, err := os.Lstat(root); err == nil {
		rootDev = fi.Sys().(*syscall.Stat_t).Dev
	}
	type inode struct{ dev, ino uint64 }
	linked := map[inode]string{} // first name of each file with several
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if oneFS && st.Dev != rootDev {
			// A mount point: record it, do not enter it.
			h := &tar.Header{Name: rel, Mode: int64(fi.Mode().Perm()), Typeflag: tar.TypeReg, ModTime: fi.ModTime()}
			if fi.IsDir() {
				h.Typeflag = tar.TypeDir
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		h.Uname, h.Gname = "", ""
		if fi.Mode()&fs.ModeDevice != 0 {
			h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		}
		if !fi.IsDir() && st.Nlink > 1 {
			id := inode{st.Dev, st.Ino}
			if first, ok := linked[id]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				linked[id] = rel
			}
		}
		if fi.Mode()&fs.ModeSymlink == 0 && h.Typeflag != tar.TypeLink {
			xattrs, err := readXattrs(p)
			if err != nil {
				return err
			}
			for k, v := range xattrs {
				if h.PAXRecords == nil {
					h.PAXRecords = map[string]string{}
				}
				h.PAXRecords[paxXattr+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			return err
		}
		return nil
	})
	err = errors.Join(err, tw.Close(), bw.Flush())
	fi, serr := f.Stat()
	err = errors.Join(err, serr, f.Close())
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// readXattrs returns the extended attributes of the file at p (not
// followed); a file system without them has none.
func readXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 1024)
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < maxXattrBytes {
			buf = make([]byte, 2*len(buf))
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00") {
		if !carriedXattr(k) {
			continue
		}
		v, err := getXattr(p, k)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", k, p, err)
		}
		out[k] = v
	}
	return out, nil
}

func getXattr(p, k string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, k, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < maxXattrBytes {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

// maxXattrBytes is more than Linux lets a file's attribute names or one
// value take (XATTR_LIST_MAX, XATTR_SIZE_MAX).
const maxXattrBytes = 1 << 17

// carriedXattr says whether an attribute goes into the archive. Overlay's
// own attributes describe the host's layers (origin is a file handle on
// this host's lower layer); only the ones that say what the layer shows
// (opaque, redirect for a renamed directory, xattr whiteouts) mean the
// same on the backup.
func carriedXattr(k string) bool {
	for _, ns := range []string{"trusted.overlay.", "user.overlay."} {
		if rest, ok := strings.CutPrefix(k, ns); ok {
			return rest == "opaque" || rest == "redirect" || rest == "whiteout" || rest == "whiteouts"
		}
	}
	return true
}
