// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/iorrc/rrc/replication/wire"
)

// Checkpoint is what the primary sends for one epoch: the files of one or
// more sources (CRIU's image directory, the file-system delta, ...), each
// under its prefix. Files must not change while they are sent (CRIU's
// images do not); a file that does is detected and the transfer aborted.
type Checkpoint struct {
	Epoch   uint64
	Sources []Source
}

// Source is a tree of regular files sent under Prefix ("" for the top).
type Source struct {
	Prefix string
	FS     fs.FS
	// Paths lists the files of FS to send; nil sends every regular file
	// (directories are implied; symlinks and devices are refused).
	Paths []string
}

type fileEntry struct {
	path string // path in the checkpoint
	fsys fs.FS
	name string // name in fsys
	size uint64
	mode fs.FileMode
}

// collect lists the files of the sources in canonical order.
func collect(sources []Source) ([]fileEntry, error) {
	var files []fileEntry
	add := func(src Source, name string) error {
		fi, err := fs.Stat(src.FS, name)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%s)", name, fi.Mode().Type())
		}
		p := path.Join(src.Prefix, name)
		if !wire.ValidCheckpointPath(p) {
			return fmt.Errorf("%q: not a valid checkpoint path", p)
		}
		files = append(files, fileEntry{path: p, fsys: src.FS, name: name, size: uint64(fi.Size()), mode: fi.Mode().Perm()})
		return nil
	}
	for _, src := range sources {
		if src.Paths != nil {
			for _, name := range src.Paths {
				if err := add(src, name); err != nil {
					return nil, err
				}
			}
			continue
		}
		err := fs.WalkDir(src.FS, ".", func(name string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			return add(src, name)
		})
		if err != nil {
			return nil, fmt.Errorf("listing %q: %w", src.Prefix, err)
		}
	}
	slices.SortFunc(files, func(a, b fileEntry) int { return strings.Compare(a.path, b.path) })
	for i := 1; i < len(files); i++ {
		if files[i].path == files[i-1].path {
			return nil, fmt.Errorf("%s: in two sources", files[i].path)
		}
	}
	return files, nil
}
