// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io/fs"
)

// BlockSize is the unit of the content digest and of delta transfers
// (CheckpointCopy): CRIU's page images are whole 4 KiB pages, so a page the
// container did not write is a block that did not change.
const BlockSize = 4096

// BlockDigest is the SHA-256 of one block of a checkpoint file.
type BlockDigest = [32]byte

// HashBlock returns the digest of one block (BlockSize bytes, or a file's
// shorter last block).
func HashBlock(b []byte) BlockDigest { return sha256.Sum256(b) }

// ContentHasher computes the canonical digest of a checkpoint's content, the
// one CheckpointEnd carries: SHA-256 over, for each file in increasing path
// order (byte-wise), the bytes
//
//	'F' | u16 len(path) | path | u32 mode | u64 size | SHA-256 of each block
//
// where the blocks are the file's content cut every BlockSize bytes (the last
// one may be shorter; an empty file has none), followed by
// 'E' | u32 file count | u64 total size. Paths, modes and sizes are covered
// so that a renamed, truncated or re-permissioned file changes the digest,
// not only changed content. Hashing blocks rather than the stream lets a
// delta transfer reuse the digests of the blocks it copies from the base
// checkpoint instead of reading them again. Callers feed files in that
// order; the hasher does not sort.
type ContentHasher struct {
	h       hash.Hash
	files   uint32
	total   uint64
	scratch []byte

	size    uint64 // of the current file
	fed     uint64 // bytes of the current file fed so far
	partial []byte // an incomplete block of Write
	keep    bool
	blocks  []BlockDigest // of the current file, if keep
}

func NewContentHasher() *ContentHasher { return &ContentHasher{h: sha256.New()} }

// NewBlockKeepingHasher is a ContentHasher that also keeps the block digests
// of the current file (FileBlocks), for the next delta transfer.
func NewBlockKeepingHasher() *ContentHasher {
	return &ContentHasher{h: sha256.New(), keep: true}
}

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
	c.size, c.fed, c.partial = size, 0, c.partial[:0]
	if c.keep {
		c.blocks = make([]BlockDigest, 0, (size+BlockSize-1)/BlockSize)
	}
}

// Write adds content of the current file, in any pieces.
func (c *ContentHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(c.partial) == 0 && len(p) >= BlockSize {
			c.addBlock(HashBlock(p[:BlockSize]), BlockSize)
			p = p[BlockSize:]
			continue
		}
		take := min(BlockSize-len(c.partial), len(p))
		c.partial = append(c.partial, p[:take]...)
		p = p[take:]
		if len(c.partial) == BlockSize {
			c.addBlock(HashBlock(c.partial), BlockSize)
			c.partial = c.partial[:0]
		}
	}
	// A short last block is complete once the file's size is reached.
	if len(c.partial) > 0 && c.fed+uint64(len(c.partial)) == c.size {
		c.addBlock(HashBlock(c.partial), len(c.partial))
		c.partial = c.partial[:0]
	}
	return n, nil
}

// AddBlock adds the digest of the next block of the current file, of n
// bytes, without its content (a block copied from a base whose digest is
// known). It must follow whole blocks: not in the middle of one fed by Write.
func (c *ContentHasher) AddBlock(d BlockDigest, n int) {
	if len(c.partial) != 0 {
		panic("wire: ContentHasher.AddBlock inside a partial block")
	}
	c.addBlock(d, n)
}

func (c *ContentHasher) addBlock(d BlockDigest, n int) {
	c.h.Write(d[:])
	c.fed += uint64(n)
	if c.keep {
		c.blocks = append(c.blocks, d)
	}
}

// FileBlocks returns the block digests of the current file so far (only for
// a hasher from NewBlockKeepingHasher). The slice is the caller's.
func (c *ContentHasher) FileBlocks() []BlockDigest { return c.blocks }

// Fed is how many bytes of the current file have been hashed.
func (c *ContentHasher) Fed() uint64 { return c.fed + uint64(len(c.partial)) }

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
