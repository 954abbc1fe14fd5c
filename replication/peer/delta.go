// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/iorrc/rrc/replication/wire"
)

// Delta transfers. Without soft-dirty page tracking every CRIU dump is
// full, but most of a container's memory does not change from one epoch to
// the next. So the Sender keeps the checkpoint it sent last (its files
// mapped read-only, and the SHA-256 of every block) and sends the next one
// as a delta against it: a block found unchanged in the base is a
// CheckpointCopy of the base's range; only the others go over the wire,
// and only they are hashed with SHA-256 (the digest of a copied block is
// the base's). A block is looked for right after the previous block's
// match, then at the same offset of the same file, which is where nearly
// all are, so an unchanged image costs one comparison per block; pages that
// moved (a mapping grew in the middle of CRIU's page image, and the pages
// after it shifted) are found through an index of the base's blocks by a
// fast hash, built the first time it is needed. A candidate is always
// compared byte for byte before it is used: the fast hash finds, it never
// decides.

// maxCopy bounds one CheckpointCopy, so that the backup's reader, which
// performs it, is never busy with one frame for long.
const maxCopy = 64 << 20

// SendStats says what a Send transferred.
type SendStats struct {
	Size      uint64 // bytes of the checkpoint
	Sent      uint64 // bytes of file content that went over the wire
	Copied    uint64 // bytes the backup copied from the base checkpoint
	BaseEpoch uint64 // the base of a delta, 0 for a full checkpoint
}

// sentImage is a checkpoint sent on this session: the base of the next.
type sentImage struct {
	epoch uint64
	files map[string]*sentFile
	index map[uint64]blockRef // fast hash of a whole block → one place it is; nil until needed
	seed  maphash.Seed
}

// lookup finds a whole block with content b in the image.
func (img *sentImage) lookup(b []byte) (blockRef, bool) {
	if img.index == nil {
		img.index = map[uint64]blockRef{}
		for _, f := range img.files {
			for i := 0; (i+1)*wire.BlockSize <= len(f.data); i++ {
				k := maphash.Bytes(img.seed, f.block(i))
				if _, ok := img.index[k]; !ok {
					img.index[k] = blockRef{f, i}
				}
			}
		}
	}
	ref, ok := img.index[maphash.Bytes(img.seed, b)]
	return ref, ok && bytes.Equal(ref.f.block(ref.block), b)
}

type sentFile struct {
	path   string
	data   []byte // the file's content, mapped read-only
	unmap  func()
	digest []wire.BlockDigest
}

type blockRef struct {
	f     *sentFile
	block int
}

func (f *sentFile) block(i int) []byte {
	off := i * wire.BlockSize
	return f.data[off:min(off+wire.BlockSize, len(f.data))]
}

func (img *sentImage) release() {
	if img == nil {
		return
	}
	for _, f := range img.files {
		if f.unmap != nil {
			f.unmap()
		}
	}
	img.files, img.index = nil, nil
}

// mapFile maps f read-only. An *os.File (os.DirFS) is mmapped: the pages are
// the tmpfs image's own, no copy; anything else is read into memory. The
// mapping stays valid after the file is removed.
func mapFile(f fileEntry) (data []byte, unmap func(), err error) {
	r, err := f.fsys.Open(f.name)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	if osf, ok := r.(*os.File); ok {
		fi, err := osf.Stat()
		if err != nil {
			return nil, nil, err
		}
		if uint64(fi.Size()) != f.size {
			return nil, nil, fmt.Errorf("file changed size while being sent (%d bytes, listed with %d)", fi.Size(), f.size)
		}
		if f.size == 0 {
			return nil, func() {}, nil
		}
		m, err := syscall.Mmap(int(osf.Fd()), 0, int(f.size), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			return nil, nil, fmt.Errorf("mapping: %w", err)
		}
		// Munmap of a mapping made here fails only for a bad address.
		return m, func() { _ = syscall.Munmap(m) }, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(f.size)+1))
	if err != nil {
		return nil, nil, err
	}
	if uint64(len(b)) != f.size {
		return nil, nil, fmt.Errorf("file changed size while being sent (%d bytes, listed with %d)", len(b), f.size)
	}
	return b, func() {}, nil
}

// fileDelta sends one file as chunks and copies from base (nil: all
// chunks), feeds the digest, and fills in the file's block digests.
type fileDelta struct {
	x     *Sender
	ctx   context.Context
	epoch uint64
	entry fileEntry
	sf    *sentFile
	base  *sentImage
	h     *wire.ContentHasher
	stats *SendStats

	lit       []byte // literal run not yet sent, from sf.data[litStart:]
	litStart  int
	copyRef   blockRef // copy run not yet sent: from copyRef, copyN blocks
	copyStart int      // its offset in the new file
	copyLen   int
	copyN     int
	misses    int // consecutive blocks not found
}

func (d *fileDelta) run() (err error) {
	// A mapped file truncated under us faults: an error, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the mapped file failed (truncated while sent?): %v", r)
		}
	}()
	data := d.sf.data
	if len(data) == 0 {
		return d.chunk(nil, 0) // an empty file is one empty chunk
	}
	var prev *blockRef
	for i, off := 0, 0; off < len(data); i, off = i+1, off+wire.BlockSize {
		b := d.sf.block(i)
		ref, found := d.find(i, b, prev)
		if found {
			d.misses = 0
			d.sf.digest[i] = ref.f.digest[ref.block]
			if err := d.addCopy(ref, off, len(b)); err != nil {
				return err
			}
			prev = &ref
		} else {
			d.sf.digest[i] = wire.HashBlock(b)
			if err := d.addLiteral(off, len(b)); err != nil {
				return err
			}
			prev = nil
		}
		d.h.AddBlock(d.sf.digest[i], len(b))
	}
	if err := d.flushCopy(); err != nil {
		return err
	}
	return d.flushLiteral()
}

// find looks for block i (content b) of the new file in the base: right
// after the previous block's match, at the same place, then anywhere. A
// short last block can only be the last block of the base's file of the
// same path and size.
func (d *fileDelta) find(i int, b []byte, prev *blockRef) (blockRef, bool) {
	if d.base == nil {
		return blockRef{}, false
	}
	same := d.base.files[d.sf.path]
	if len(b) < wire.BlockSize {
		if same == nil || len(same.data) != len(d.sf.data) {
			return blockRef{}, false
		}
		ref := blockRef{same, len(same.digest) - 1}
		return ref, bytes.Equal(same.block(ref.block), b)
	}
	if prev != nil && d.fullBlockEqual(prev.f, prev.block+1, b) {
		return blockRef{prev.f, prev.block + 1}, true
	}
	if same != nil && d.fullBlockEqual(same, i, b) {
		return blockRef{same, i}, true
	}
	// Most blocks not where they were were written. Pages that moved are
	// looked for only where they may have: in a file that is new or changed
	// size, or after a run of misses (a page appeared and another went in
	// a file of the same size). The index costs hashing the base once.
	d.misses++
	if same != nil && len(same.data) == len(d.sf.data) && d.misses < shiftSuspect {
		return blockRef{}, false
	}
	return d.base.lookup(b)
}

// shiftSuspect consecutive blocks not found where they were make the rest
// of the run be looked up in the index.
const shiftSuspect = 3

// fullBlockEqual reports whether f has a whole block i equal to b.
func (d *fileDelta) fullBlockEqual(f *sentFile, i int, b []byte) bool {
	return (i+1)*wire.BlockSize <= len(f.data) && bytes.Equal(f.block(i), b)
}

func (d *fileDelta) addCopy(ref blockRef, off, n int) error {
	if err := d.flushLiteral(); err != nil {
		return err
	}
	if d.copyN > 0 && ref.f == d.copyRef.f && ref.block == d.copyRef.block+d.copyN && d.copyLen+n <= maxCopy {
		d.copyN++
		d.copyLen += n
		return nil
	}
	if err := d.flushCopy(); err != nil {
		return err
	}
	d.copyRef, d.copyStart, d.copyLen, d.copyN = ref, off, n, 1
	return nil
}

func (d *fileDelta) flushCopy() error {
	if d.copyN == 0 {
		return nil
	}
	c := wire.CheckpointCopy{Path: d.entry.path, Mode: d.entry.mode, FileSize: d.entry.size, Offset: uint64(d.copyStart),
		Length: uint64(d.copyLen), BasePath: d.copyRef.f.path, BaseOffset: uint64(d.copyRef.block * wire.BlockSize)}
	d.copyN = 0
	d.stats.Copied += c.Length
	return d.x.s.enqueue(d.ctx, d.x.s.bulk, wire.TypeCheckpointCopy, d.epoch, c.Append(nil), false)
}

func (d *fileDelta) addLiteral(off, n int) error {
	if err := d.flushCopy(); err != nil {
		return err
	}
	if len(d.lit) == 0 {
		d.litStart = off
	}
	d.lit = d.sf.data[d.litStart : off+n]
	for len(d.lit) >= d.x.s.opts.ChunkSize {
		if err := d.chunk(d.lit[:d.x.s.opts.ChunkSize], d.litStart); err != nil {
			return err
		}
		d.litStart += d.x.s.opts.ChunkSize
		d.lit = d.lit[d.x.s.opts.ChunkSize:]
	}
	return nil
}

func (d *fileDelta) flushLiteral() error {
	if len(d.lit) == 0 {
		return nil
	}
	err := d.chunk(d.lit, d.litStart)
	d.lit = nil
	return err
}

// chunk queues data at off as a CheckpointChunk (the payload is a copy:
// the mapping may go before the frame is written).
func (d *fileDelta) chunk(data []byte, off int) error {
	c := wire.CheckpointChunk{Path: d.entry.path, Mode: d.entry.mode, FileSize: d.entry.size, Offset: uint64(off), Data: data}
	if hk := d.x.s.opts.hooks; hk != nil && hk.chunk != nil {
		c.Data = bytes.Clone(data) // the hook may write into it
		hk.chunk(&c)
	}
	d.stats.Sent += uint64(len(data))
	return d.x.s.enqueue(d.ctx, d.x.s.bulk, wire.TypeCheckpointChunk, d.epoch, c.Append(make([]byte, 0, len(data)+len(c.Path)+32)), false)
}
