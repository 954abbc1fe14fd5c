// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/beneath"
)

// extractTreeTar unpacks an archive made by writeTreeTar into dir. The
// archive comes from the peer: every entry is created beneath dir through
// runtime/beneath, so no name, symlink or hard link in it can make it
// write, link or change anything outside dir; an entry that would is an
// error naming it.
func extractTreeTar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := extractTree(bufio.NewReader(f), dir); err != nil {
		return fmt.Errorf("unpack %s: %w", archive, err)
	}
	return nil
}

// extractTree unpacks the tar stream r into dir (see extractTreeTar).
func extractTree(r io.Reader, dir string) error {
	d, err := beneath.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	tr := tar.NewReader(r)
	// Directories get their times and modes last: the entries written
	// into them would change the times again.
	type dirMeta struct {
		name string
		meta beneath.Meta
	}
	var dirs []dirMeta
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, meta, err := entryMeta(h)
		if err == nil {
			err = applyEntry(d, tr, h, name)
		}
		if err == nil && h.Typeflag != tar.TypeLink { // a hard link shares its target's inode
			if h.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirMeta{name, meta})
			} else {
				err = d.SetMeta(name, meta)
			}
		}
		if err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := d.SetMeta(dirs[i].name, dirs[i].meta); err != nil {
			return fmt.Errorf("entry %q: %w", dirs[i].name, err)
		}
	}
	return nil
}

// entryMeta checks an entry's name and returns it cleaned, with what
// SetMeta is to apply.
func entryMeta(h *tar.Header) (string, beneath.Meta, error) {
	if err := beneath.CheckName(h.Name); err != nil {
		return "", beneath.Meta{}, err
	}
	if h.Typeflag == tar.TypeGNUSparse {
		return "", beneath.Meta{}, errors.New("sparse entry: not written by this archiver")
	}
	m := beneath.Meta{Mode: uint32(h.Mode & 0o7777), UID: h.Uid, GID: h.Gid, Atime: h.AccessTime, Mtime: h.ModTime}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", beneath.Meta{}, errors.New("sparse entry: not written by this archiver")
		}
		if x, ok := strings.CutPrefix(k, paxXattr); ok {
			if m.Xattrs == nil {
				m.Xattrs = map[string]string{}
			}
			m.Xattrs[x] = v
		}
	}
	return path.Clean(h.Name), m, nil
}

// applyEntry creates the entry name of h beneath d. What is at a name
// already (from an earlier entry) is replaced, a directory kept.
func applyEntry(d *beneath.Dir, r io.Reader, h *tar.Header, name string) error {
	switch h.Typeflag {
	case tar.TypeDir:
		return d.Mkdir(name, 0o700)
	case tar.TypeReg:
		if err := d.Remove(name); err != nil {
			return err
		}
		w, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		return errors.Join(writeSparse(w, r, h.Size), w.Close())
	case tar.TypeSymlink:
		if strings.IndexByte(h.Linkname, 0) >= 0 || h.Linkname == "" {
			return fmt.Errorf("symlink target %q", h.Linkname)
		}
		if err := d.Remove(name); err != nil {
			return err
		}
		return d.Symlink(h.Linkname, name)
	case tar.TypeLink:
		if err := d.Remove(name); err != nil {
			return err
		}
		return d.Link(h.Linkname, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > 0xfff || h.Devminor > 0xfffff {
			return fmt.Errorf("device number %d:%d", h.Devmajor, h.Devminor)
		}
		if err := d.Remove(name); err != nil {
			return err
		}
		return d.Mknod(name, kind|0o600, unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))
	default:
		return fmt.Errorf("unsupported tar type %q", h.Typeflag)
	}
}

// holeBlock is the unit writeSparse leaves unwritten when it is all zero.
const holeBlock = 4096

// writeSparse copies size bytes of r into w, leaving holes where whole
// blocks are zero, so that a sparse file is sparse again.
func writeSparse(w *os.File, r io.Reader, size int64) error {
	buf := make([]byte, 64<<10)
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		for b := 0; b < n; b += holeBlock {
			blk := buf[b:min(b+holeBlock, n)]
			if isZero(blk) {
				continue
			}
			if _, werr := w.WriteAt(blk, off+int64(b)); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err != nil {
			return fmt.Errorf("read file data: %w", err)
		}
	}
	return w.Truncate(size)
}

func isZero(b []byte) bool {
	var zero [holeBlock]byte
	return bytes.Equal(b, zero[:len(b)])
}
