package ckptstore

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/iorrc/rrc/replication/wire"
)

// Verify reads the checkpoint's files back from disk and checks them
// against what was verified when it was committed: the number of files,
// their total size and the canonical SHA-256 content digest (paths, modes,
// sizes and content; see wire.ContentHasher). The promotion calls it right
// before a restore, so that a checkpoint damaged on disk after its commit
// (a bad disk, an operator, a bug) is refused rather than restored. A
// mismatch is ErrCorrupt; an unreadable file is reported as it is.
//
// Only the checkpoint's own directory is checked: the manifest keeps the
// digest of the current checkpoint alone, so the bases of an incremental
// one were verified when they were committed but are not here.
func (c Checkpoint) Verify() error {
	if err := c.verify(); err != nil {
		return fmt.Errorf("verifying checkpoint %d in %s: %w", c.Epoch, c.Dir, err)
	}
	return nil
}

func (c Checkpoint) verify() error {
	type file struct {
		path string // slash-separated, relative to Dir
		mode fs.FileMode
		size int64
	}
	var files []file
	err := filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(c.Dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file (%s)", ErrCorrupt, rel, fi.Mode().Type())
		}
		files = append(files, file{path: rel, mode: fi.Mode().Perm(), size: fi.Size()})
		return nil
	})
	if err != nil {
		return err
	}
	// The canonical order is increasing byte order of the whole path, which
	// is not the walk's (a/b comes before a.x in the walk).
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.path, b.path) })
	var total uint64
	for _, f := range files {
		total += uint64(f.size)
	}
	if uint32(len(files)) != c.Files || total != c.Size || len(files) > int(^uint32(0)) {
		return fmt.Errorf("%w: %d files, %d bytes on disk; %d files, %d bytes committed", ErrCorrupt, len(files), total, c.Files, c.Size)
	}
	h := wire.NewContentHasher()
	for _, f := range files {
		h.BeginFile(f.path, f.mode, uint64(f.size))
		if err := hashFile(h, filepath.Join(c.Dir, filepath.FromSlash(f.path)), f.size); err != nil {
			return err
		}
	}
	if sum := h.Sum(); sum != c.Digest {
		return fmt.Errorf("%w: SHA-256 of the files on disk is %x, the committed digest %x", ErrCorrupt, sum[:8], c.Digest[:8])
	}
	return nil
}

// hashFile adds exactly size bytes of path to h: a file that changed size
// since it was listed is corrupt too.
func hashFile(h io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%w: %s changed size while being verified", ErrCorrupt, path)
	}
	return nil
}
