package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io/fs"
)

// ContentHasher computes the canonical digest of a checkpoint's content, the
// one CheckpointEnd carries: SHA-256 over, for each file in increasing path
// order (byte-wise), the bytes
//
//	'F' | u16 len(path) | path | u32 mode | u64 size | content
//
// followed by 'E' | u32 file count | u64 total size. Paths, modes and sizes
// are covered so that a renamed, truncated or re-permissioned file changes
// the digest, not only changed content. Callers feed files in that order;
// the hasher does not sort.
type ContentHasher struct {
	h       hash.Hash
	files   uint32
	total   uint64
	scratch []byte
}

func NewContentHasher() *ContentHasher { return &ContentHasher{h: sha256.New()} }

// BeginFile starts the next file.
func (c *ContentHasher) BeginFile(path string, mode fs.FileMode, size uint64) {
	b := append(c.scratch[:0], 'F')
	b = binary.BigEndian.AppendUint16(b, uint16(len(path)))
	b = append(b, path...)
	b = binary.BigEndian.AppendUint32(b, uint32(mode&fs.ModePerm))
	b = binary.BigEndian.AppendUint64(b, size)
	c.h.Write(b)
	c.scratch = b
	c.files++
	c.total += size
}

// Write adds content of the current file.
func (c *ContentHasher) Write(p []byte) (int, error) { return c.h.Write(p) }

// Sum finishes the digest. The hasher must not be used afterwards.
func (c *ContentHasher) Sum() [32]byte {
	b := append(c.scratch[:0], 'E')
	b = binary.BigEndian.AppendUint32(b, c.files)
	b = binary.BigEndian.AppendUint64(b, c.total)
	c.h.Write(b)
	var d [32]byte
	c.h.Sum(d[:0])
	return d
}
