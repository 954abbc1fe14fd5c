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

// writeTreeTar archives the directory tree at root into path (uncompressed:
// it runs while the container is frozen, and on tmpfs compression costs more
// than it saves): directories, regular files, symlinks, character devices
// (overlay whiteouts, /dev nodes) and the overlay opaque xattr. The root
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
		if oneFS && fi.Sys().(*syscall.Stat_t).Dev != rootDev {
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
		if s, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode()&fs.ModeCharDevice != 0 {
			h.Devmajor, h.Devminor = int64(unix.Major(uint64(s.Rdev))), int64(unix.Minor(uint64(s.Rdev)))
		}
		if d.IsDir() {
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(p, opaqueXattr, buf); err == nil {
				h.PAXRecords = map[string]string{"SCHILY.xattr." + opaqueXattr: string(buf[:n])}
				h.Format = tar.FormatPAX
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

// extractTreeTar unpacks an archive made by writeTreeTar into dir.
func extractTreeTar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if err := applyEntry(tr, h, dir); err != nil {
			return fmt.Errorf("unpack %s from %s: %w", h.Name, path, err)
		}
	}
}

func applyEntry(r io.Reader, h *tar.Header, dir string) error {
	name := filepath.Clean(h.Name)
	if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
		return fmt.Errorf("path escapes the layer")
	}
	p := filepath.Join(dir, name)
	mode := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, os.FileMode(mode)); err != nil && !os.IsExist(err) {
			return err
		}
		if v, ok := h.PAXRecords["SCHILY.xattr."+opaqueXattr]; ok {
			if err := unix.Lsetxattr(p, opaqueXattr, []byte(v), 0); err != nil {
				return err
			}
		}
	case tar.TypeReg:
		w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(mode))
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		if err := errors.Join(err, w.Close()); err != nil {
			return err
		}
	case tar.TypeSymlink:
		os.Remove(p)
		if err := os.Symlink(h.Linkname, p); err != nil {
			return err
		}
	case tar.TypeChar:
		os.Remove(p)
		if err := unix.Mknod(p, unix.S_IFCHR|mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar type %q", h.Typeflag)
	}
	if h.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(p, os.FileMode(mode)|modeBits(mode)); err != nil {
			return err
		}
	}
	if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeSymlink {
		return os.Chtimes(p, h.AccessTime, h.ModTime)
	}
	return nil
}

// modeBits carries setuid/setgid/sticky into an os.FileMode.
func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
