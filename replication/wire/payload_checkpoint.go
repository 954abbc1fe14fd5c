// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"encoding/binary"
	"io/fs"
	"strings"
)

// CheckpointBegin opens the transfer of the checkpoint of the header's epoch.
// BaseEpoch is 0 for a full checkpoint, or the committed checkpoint an
// incremental one builds on (e.g. CRIU's parent images).
type CheckpointBegin struct {
	TotalSize uint64 // sum of the sizes of all files
	FileCount uint32
	BaseEpoch uint64
}

func (c CheckpointBegin) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, c.TotalSize)
	dst = binary.BigEndian.AppendUint32(dst, c.FileCount)
	return binary.BigEndian.AppendUint64(dst, c.BaseEpoch)
}

func DecodeCheckpointBegin(b []byte) (CheckpointBegin, error) {
	d := decoder{what: "CheckpointBegin", b: b}
	c := CheckpointBegin{TotalSize: d.u64("total size"), FileCount: d.u32("file count"), BaseEpoch: d.u64("base epoch")}
	return c, d.done()
}

// CheckpointChunk carries Data at Offset of the file Path (slash-separated,
// relative, as fs.ValidPath) of FileSize bytes and permission bits Mode.
// Chunks come in canonical order: files by increasing path (byte order),
// within a file by contiguous offsets from 0; an empty file is one chunk with
// no data. This lets the receiver verify sizes and hash while it writes.
type CheckpointChunk struct {
	Path     string
	Mode     fs.FileMode // permission bits only
	FileSize uint64
	Offset   uint64
	Data     []byte
}

func (c CheckpointChunk) Append(dst []byte) []byte {
	dst = appendStr(dst, c.Path)
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.Mode))
	dst = binary.BigEndian.AppendUint64(dst, c.FileSize)
	dst = binary.BigEndian.AppendUint64(dst, c.Offset)
	return appendBytes(dst, c.Data)
}

// DecodeCheckpointChunk decodes a chunk; Data aliases b.
func DecodeCheckpointChunk(b []byte) (CheckpointChunk, error) {
	d := decoder{what: "CheckpointChunk", b: b}
	c := CheckpointChunk{Path: d.str("path", MaxPathLen)}
	c.Mode = fs.FileMode(d.u32("mode"))
	c.FileSize = d.u64("file size")
	c.Offset = d.u64("offset")
	c.Data = d.bytes("data", MaxChunkData)
	if err := d.done(); err != nil {
		return CheckpointChunk{}, err
	}
	switch {
	case !ValidCheckpointPath(c.Path):
		d.fail("path %q is not a clean relative path", c.Path)
	case c.Mode&^fs.ModePerm != 0:
		d.fail("mode %#o has more than permission bits", uint32(c.Mode))
	case c.Offset > c.FileSize || uint64(len(c.Data)) > c.FileSize-c.Offset:
		d.fail("%d bytes at offset %d overrun file size %d", len(c.Data), c.Offset, c.FileSize)
	}
	if d.err != nil {
		return CheckpointChunk{}, d.err
	}
	return c, nil
}

// CheckpointCopy fills Length bytes at Offset of the file Path (FileSize
// bytes, permission bits Mode) with the bytes at BaseOffset of the file
// BasePath of the base checkpoint (CheckpointBegin.BaseEpoch): the parts of
// a checkpoint that did not change since the base are not sent again. It
// takes the place of chunks in the canonical order (contiguous with them).
// Offsets are multiples of BlockSize in both files; Length is a multiple of
// BlockSize unless the range ends both files (their last, short block), so
// that the receiver can reuse the digests of the base's blocks.
type CheckpointCopy struct {
	Path       string
	Mode       fs.FileMode
	FileSize   uint64
	Offset     uint64
	Length     uint64
	BasePath   string
	BaseOffset uint64
}

func (c CheckpointCopy) Append(dst []byte) []byte {
	dst = appendStr(dst, c.Path)
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.Mode))
	dst = binary.BigEndian.AppendUint64(dst, c.FileSize)
	dst = binary.BigEndian.AppendUint64(dst, c.Offset)
	dst = binary.BigEndian.AppendUint64(dst, c.Length)
	dst = appendStr(dst, c.BasePath)
	return binary.BigEndian.AppendUint64(dst, c.BaseOffset)
}

// DecodeCheckpointCopy decodes a copy. Whether the base range exists and
// ends its file when Length is short is the receiver's to check.
func DecodeCheckpointCopy(b []byte) (CheckpointCopy, error) {
	d := decoder{what: "CheckpointCopy", b: b}
	c := CheckpointCopy{Path: d.str("path", MaxPathLen)}
	c.Mode = fs.FileMode(d.u32("mode"))
	c.FileSize = d.u64("file size")
	c.Offset = d.u64("offset")
	c.Length = d.u64("length")
	c.BasePath = d.str("base path", MaxPathLen)
	c.BaseOffset = d.u64("base offset")
	if err := d.done(); err != nil {
		return CheckpointCopy{}, err
	}
	switch {
	case !ValidCheckpointPath(c.Path) || !ValidCheckpointPath(c.BasePath):
		d.fail("path %q or base path %q is not a clean relative path", c.Path, c.BasePath)
	case c.Mode&^fs.ModePerm != 0:
		d.fail("mode %#o has more than permission bits", uint32(c.Mode))
	case c.Length == 0:
		d.fail("empty copy")
	case c.Offset%BlockSize != 0 || c.BaseOffset%BlockSize != 0:
		d.fail("offsets %d and %d are not multiples of the block size", c.Offset, c.BaseOffset)
	case c.Offset > c.FileSize || c.Length > c.FileSize-c.Offset:
		d.fail("%d bytes at offset %d overrun file size %d", c.Length, c.Offset, c.FileSize)
	case c.BaseOffset > ^uint64(0)-c.Length:
		d.fail("base range overflows")
	case c.Length%BlockSize != 0 && c.Offset+c.Length != c.FileSize:
		d.fail("a copy of %d bytes (not whole blocks) must end the file", c.Length)
	}
	if d.err != nil {
		return CheckpointCopy{}, d.err
	}
	return c, nil
}

// ValidCheckpointPath reports whether p may name a file of a checkpoint: a
// clean, relative, slash-separated path without "." or ".." elements,
// control characters (NUL, newline, ...) or backslash, each element at most
// 255 bytes, so that it cannot escape the checkpoint directory (the store
// also creates it beneath the directory, runtime/beneath) nor break a line
// of a log or configuration.
func ValidCheckpointPath(p string) bool {
	if p == "." || len(p) > MaxPathLen || !fs.ValidPath(p) || strings.ContainsRune(p, '\\') {
		return false
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	for _, e := range strings.Split(p, "/") {
		if len(e) > maxPathElem {
			return false
		}
	}
	return true
}

// maxPathElem is NAME_MAX.
const maxPathElem = 255

// CheckpointEnd closes the transfer. Digest is the canonical content digest
// (see ContentDigest) of all files of the checkpoint.
type CheckpointEnd struct {
	Digest [32]byte
}

func (c CheckpointEnd) Append(dst []byte) []byte { return append(dst, c.Digest[:]...) }

func DecodeCheckpointEnd(b []byte) (CheckpointEnd, error) {
	d := decoder{what: "CheckpointEnd", b: b}
	var c CheckpointEnd
	copy(c.Digest[:], d.take(32, "digest"))
	return c, d.done()
}

// CheckpointAbort abandons the transfer in progress (the primary's context
// was cancelled, or a source file changed under it). The backup discards the
// staging copy and keeps its last committed checkpoint.
type CheckpointAbort struct {
	Reason string
}

func (c CheckpointAbort) Append(dst []byte) []byte {
	return appendStr(dst, truncateUTF8(c.Reason, MaxMessageLen))
}

func DecodeCheckpointAbort(b []byte) (CheckpointAbort, error) {
	d := decoder{what: "CheckpointAbort", b: b}
	c := CheckpointAbort{Reason: d.str("reason", MaxMessageLen)}
	return c, d.done()
}
