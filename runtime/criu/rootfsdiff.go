// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// RootfsDiffFile is the name of the writable-layer archive in a checkpoint
// directory (the name podman and CRI-O use for the same thing).
const RootfsDiffFile = "rootfs-diff.tar"

// OverlayUpperdir returns the upperdir of the overlay mounted at rootfs, read
// from /proc/self/mountinfo.
func OverlayUpperdir(rootfs string) (string, error) {
	o, err := ReadOverlayMount(rootfs)
	if err != nil {
		return "", err
	}
	return o.Upper, nil
}

// OverlayMount is an overlay file system's layers.
type OverlayMount struct {
	Lower []string // top first, as in lowerdir=
	Upper string
}

// ReadOverlayMount returns the layers of the overlay mounted at rootfs.
func ReadOverlayMount(rootfs string) (OverlayMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return OverlayMount{}, fmt.Errorf("find overlay at %s: %w", rootfs, err)
	}
	defer f.Close()
	return overlayMountFrom(f, rootfs)
}

func overlayMountFrom(r io.Reader, rootfs string) (OverlayMount, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var om OverlayMount
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || unescapeMountinfo(f[4]) != rootfs {
			continue
		}
		om = OverlayMount{}
		if g[0] != "overlay" {
			continue // a later mount may cover it; last one wins
		}
		for _, o := range strings.Split(g[2], ",") {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				om.Upper = unescapeMountinfo(v)
			}
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				om.Lower = strings.Split(unescapeMountinfo(v), ":")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return OverlayMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if om.Upper == "" {
		return OverlayMount{}, fmt.Errorf("no overlay with an upperdir mounted at %s", rootfs)
	}
	return om, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// WriteRootfsDiff archives the overlay upper directory upper into path:
// files, directories, symlinks, hard links, FIFOs, devices, whiteouts (0/0
// character devices) and extended attributes (overlay's opaque and
// redirect marks among them); sockets are left out (writeTreeTar). In
// process, no tar child: it runs inside the pause.
// It returns the archive's size.
func WriteRootfsDiff(path, upper string) (int64, error) {
	n, err := writeTreeTar(path, upper, false)
	if err != nil {
		return 0, fmt.Errorf("archive writable layer %s: %w", upper, err)
	}
	return n, nil
}

// ApplyRootfsDiff unpacks an archive made by WriteRootfsDiff into dir, the
// upper directory of a fresh overlay over the same lower layers. The
// archive came from the peer: nothing in it can write outside dir
// (extractTreeTar).
func ApplyRootfsDiff(path, dir string) error {
	if err := extractTreeTar(path, dir); err != nil {
		return fmt.Errorf("apply rootfs diff: %w", err)
	}
	return nil
}
