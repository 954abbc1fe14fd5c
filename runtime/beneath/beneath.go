// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package beneath writes files under a directory by names that may come
// from an untrusted peer: every name is resolved with openat2 and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS from a descriptor of the directory,
// and the last component is never followed, so no name, symlink or hard
// link can reach anything outside it (docs/ARCHITECTURE.md, invariant 7).
package beneath

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxNameLen bounds a name below the directory (PATH_MAX).
const MaxNameLen = 4096

// resolveFlags: nothing outside the directory, no symlink at all in the
// directories of a name (an archive of a tree has none on its way), no
// /proc magic links.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Dir is an open directory that names resolve beneath. Not safe for
// concurrent Close.
type Dir struct {
	fd   int
	path string
}

// Open opens the directory at p (which the caller trusts).
func Open(p string) (*Dir, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return &Dir{fd: fd, path: p}, nil
}

// Path is the directory's path, for messages.
func (d *Dir) Path() string { return d.path }

// Close releases the directory's descriptor.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// CheckName reports why name cannot name something beneath a directory:
// it must be relative, clean of "..", without NUL and at most MaxNameLen
// bytes. "." is the directory itself.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes (at most %d)", len(name), MaxNameLen)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q contains NUL", name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute name %q", name)
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return fmt.Errorf("name %q climbs with ..", name)
		}
	}
	return nil
}

// split resolves the directory holding name and returns a descriptor of
// it (to release with the returned function) and the last component.
func (d *Dir) split(name string) (int, string, func(), error) {
	if err := CheckName(name); err != nil {
		return -1, "", nil, err
	}
	name = path.Clean(name)
	dir, base := path.Split(name)
	if dir == "" {
		return d.fd, base, func() {}, nil
	}
	fd, err := d.openat2(d.fd, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", nil, fmt.Errorf("resolve %s beneath %s: %w", dir, d.path, err)
	}
	return fd, base, func() { unix.Close(fd) }, nil
}

// openat2 opens name beneath dirfd, retrying when a concurrent rename
// made the kernel give up (EAGAIN).
func (d *Dir) openat2(dirfd int, name string, flags int, mode uint32) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags}
	for range 16 {
		fd, err := unix.Openat2(dirfd, name, how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOSYS) {
			return -1, errors.New("openat2 is not available (Linux 5.6 or later needed)")
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// OpenFile opens name beneath d with flag (os.O_*) and, when it creates
// the file, mode. A symlink as the last component is refused (O_NOFOLLOW).
func (d *Dir) OpenFile(name string, flag int, mode os.FileMode) (*os.File, error) {
	parent, base, release, err := d.split(name)
	if err != nil {
		return nil, err
	}
	defer release()
	fd, err := d.openat2(parent, base, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), path.Join(d.path, name)), nil
}

// Mkdir makes the directory name; one that is there already is kept (a
// non-directory there is an error).
func (d *Dir) Mkdir(name string, mode os.FileMode) error {
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	err = unix.Mkdirat(parent, base, uint32(mode.Perm()))
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "stat", Path: name, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return &os.PathError{Op: "mkdir", Path: name, Err: unix.ENOTDIR}
		}
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// MkdirAll makes name and its missing parents.
func (d *Dir) MkdirAll(name string, mode os.FileMode) error {
	if err := CheckName(name); err != nil {
		return err
	}
	name = path.Clean(name)
	if name == "." {
		return nil
	}
	parts := strings.Split(name, "/")
	for i := range parts {
		if err := d.Mkdir(strings.Join(parts[:i+1], "/"), mode); err != nil {
			return err
		}
	}
	return nil
}

// Remove removes the non-directory name if it is there.
func (d *Dir) Remove(name string) error {
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Unlinkat(parent, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// Symlink makes name a symlink to target. The target is stored as is and
// never followed here.
func (d *Dir) Symlink(target, name string) error {
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Symlinkat(target, parent, base); err != nil {
		return &os.PathError{Op: "symlink", Path: name, Err: err}
	}
	return nil
}

// Link makes name a hard link to oldname, both beneath d; a symlink as
// oldname is linked itself, not followed.
func (d *Dir) Link(oldname, name string) error {
	oldParent, oldBase, releaseOld, err := d.split(oldname)
	if err != nil {
		return fmt.Errorf("link target: %w", err)
	}
	defer releaseOld()
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Linkat(oldParent, oldBase, parent, base, 0); err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: name, Err: err}
	}
	return nil
}

// Mknod makes a device node or FIFO; mode carries the type (unix.S_IF*).
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Mknodat(parent, base, mode, int(dev)); err != nil {
		return &os.PathError{Op: "mknod", Path: name, Err: err}
	}
	return nil
}

// Lstat stats name without following it.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	parent, base, release, err := d.split(name)
	if err != nil {
		return st, err
	}
	defer release()
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return st, nil
}

// Meta is what SetMeta applies to an entry. A zero time is left as is.
type Meta struct {
	Mode         uint32 // permission, setuid, setgid, sticky bits; not for symlinks
	UID, GID     int
	Atime, Mtime time.Time
	Xattrs       map[string]string // not for symlinks
}

// SetMeta sets the owner, mode, extended attributes and times of name,
// through a descriptor of the entry itself (O_PATH, not followed), so that
// an entry that is a symlink changes only itself.
func (d *Dir) SetMeta(name string, m Meta) error {
	parent, base, release, err := d.split(name)
	if err != nil {
		return err
	}
	defer release()
	fd, err := d.openat2(parent, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if err := unix.Fchownat(fd, "", m.UID, m.GID, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil // Linux symlinks have no mode; their times and xattrs are not carried
	}
	// The entry through its descriptor's /proc link: the link resolves to
	// the inode itself, whatever is at name meanwhile.
	self := "/proc/self/fd/" + strconv.Itoa(fd)
	for k, v := range m.Xattrs {
		if err := unix.Setxattr(self, k, []byte(v), 0); err != nil {
			return &os.PathError{Op: "setxattr " + k, Path: name, Err: err}
		}
	}
	if err := unix.Chmod(self, m.Mode&0o7777); err != nil {
		return &os.PathError{Op: "chmod", Path: name, Err: err}
	}
	ts := []unix.Timespec{timespec(m.Atime), timespec(m.Mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, self, ts, 0); err != nil {
		return &os.PathError{Op: "utimes", Path: name, Err: err}
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(t.UnixNano())
}
