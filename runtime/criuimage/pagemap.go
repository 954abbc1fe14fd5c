// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Pagemap entry flags (criu/include/pagemap.h).
const (
	FlagParent  = 1 // PE_PARENT: the data is in the parent dump's images
	FlagLazy    = 2 // PE_LAZY: the pages may be restored lazily
	FlagPresent = 4 // PE_PRESENT: the data is in pages-<id>.img
)

const (
	imgCommonMagic = 0x54564319 // IMG_COMMON_MAGIC, first word of every non-raw image
	pagemapMagic   = 0x56084025 // PAGEMAP_MAGIC (also SHMEM_PAGEMAP_MAGIC)

	// An entry is at most five varint fields (≤ 55 bytes even with
	// non-minimal varints); anything much larger is not a pagemap record.
	maxRecordSize = 128
	// MaxPagemapSize bounds a pagemap file: about three million entries,
	// far more than the VMAs of any process we replicate.
	MaxPagemapSize = 64 << 20
)

// pageSize is the page size of the dumping host, which is this host.
var pageSize = uint64(os.Getpagesize())

// Entry is one pagemap entry: NrPages pages from Vaddr (for a
// pagemap-shmem image, an offset in the shared memory segment).
type Entry struct {
	Vaddr   uint64
	NrPages uint64
	Flags   uint32
}

// End is the address just past the entry's pages.
func (e Entry) End() uint64 { return e.Vaddr + e.NrPages*pageSize }

func (e Entry) String() string {
	return fmt.Sprintf("%#x-%#x (%d pages, flags %#x)", e.Vaddr, e.End(), e.NrPages, e.Flags)
}

// Pagemap is a decoded pagemap image.
type Pagemap struct {
	PagesID uint32 // the data is in pages-<PagesID>.img
	Entries []Entry
}

// PagesFile is the name of the raw file holding the present pages' data.
func (p *Pagemap) PagesFile() string { return fmt.Sprintf("pages-%d.img", p.PagesID) }

// PresentPages is the number of pages stored in the pages file.
func (p *Pagemap) PresentPages() uint64 {
	var n uint64
	for _, e := range p.Entries {
		if e.Flags&FlagPresent != 0 {
			n += e.NrPages
		}
	}
	return n
}

// HasParent reports whether some entry's data is in the parent dump.
func (p *Pagemap) HasParent() bool {
	for _, e := range p.Entries {
		if e.Flags&FlagParent != 0 {
			return true
		}
	}
	return false
}

// ReadPagemap reads and decodes a pagemap image file.
func ReadPagemap(path string) (*Pagemap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPagemapSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	p, err := DecodePagemap(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// DecodePagemap decodes a pagemap image. It is strict: besides the framing
// it rejects unknown or repeated fields, flag combinations CRIU does not
// write, and entries that are empty, unaligned, or not ascending and
// disjoint, since MergeParent and ReadPages rely on all of that. It wants
// the two-magic header of image format 1.1 (CRTOOLS_IMAGES_V1_1, what
// recent CRIUs write), and reads older CRIUs' entry fields (in_parent,
// compat_nr_pages).
func DecodePagemap(b []byte) (*Pagemap, error) {
	p, err := decodePagemap(b)
	if err != nil {
		return nil, fmt.Errorf("decode pagemap: %w", err)
	}
	return p, nil
}

func decodePagemap(b []byte) (*Pagemap, error) {
	if len(b) > MaxPagemapSize {
		return nil, fmt.Errorf("more than %d bytes", MaxPagemapSize)
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("%d bytes, too short for the image magic", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != imgCommonMagic {
		return nil, fmt.Errorf("image magic %#08x, want %#08x", m, imgCommonMagic)
	}
	if m := binary.LittleEndian.Uint32(b[4:]); m != pagemapMagic {
		return nil, fmt.Errorf("magic %#08x is not a pagemap's (%#08x)", m, pagemapMagic)
	}
	if len(b) == 8 {
		return nil, errors.New("no head record")
	}
	rec, off, err := nextRecord(b, 8)
	if err != nil {
		return nil, fmt.Errorf("head record: %w", err)
	}
	p := &Pagemap{}
	if p.PagesID, err = decodeHead(rec); err != nil {
		return nil, fmt.Errorf("head record: %w", err)
	}
	for i := 0; off < len(b); i++ {
		e, next, err := decodeEntry(b, off)
		if err == nil && i > 0 {
			err = checkOrder(p.Entries[i-1], e)
		}
		if err != nil {
			return nil, fmt.Errorf("entry %d at offset %d: %w", i, off, err)
		}
		p.Entries = append(p.Entries, e)
		off = next
	}
	return p, nil
}

// nextRecord returns the pagemap record at off and the offset after it.
func nextRecord(b []byte, off int) (rec []byte, next int, err error) {
	return nextRecordUpTo(b, off, maxRecordSize)
}

// nextRecordUpTo returns the record at off, of at most max bytes, and the
// offset after it.
func nextRecordUpTo(b []byte, off int, max uint32) (rec []byte, next int, err error) {
	if len(b)-off < 4 {
		return nil, 0, fmt.Errorf("record length truncated (%d of 4 bytes)", len(b)-off)
	}
	n := binary.LittleEndian.Uint32(b[off:])
	if n > max {
		return nil, 0, fmt.Errorf("record of %d bytes, more than %d", n, max)
	}
	if left := len(b) - off - 4; int(n) > left {
		return nil, 0, fmt.Errorf("record of %d bytes truncated to %d", n, left)
	}
	return b[off+4 : off+4+int(n)], off + 4 + int(n), nil
}

// fields holds the varint fields 1..5 of a record; bit 0 of fields[0]
// is unused and its bits 1..5 say which fields were present.
type fields [6]uint64

func (v fields) has(num int) bool { return v[0]&(1<<num) != 0 }

// decodeFields decodes a record whose fields are all varints numbered
// 1..max, each present at most once, as in every record CRIU writes here.
func decodeFields(rec []byte, max protowire.Number) (fields, error) {
	var v fields
	for len(rec) > 0 {
		num, typ, n := protowire.ConsumeTag(rec)
		if n < 0 {
			return v, fmt.Errorf("bad field tag: %w", protowire.ParseError(n))
		}
		if num > max {
			return v, fmt.Errorf("unknown field %d", num)
		}
		if typ != protowire.VarintType {
			return v, fmt.Errorf("field %d has wire type %d, want varint", num, typ)
		}
		rec = rec[n:]
		x, n := protowire.ConsumeVarint(rec)
		if n < 0 {
			return v, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		if v.has(int(num)) {
			return v, fmt.Errorf("field %d repeated", num)
		}
		v[0] |= 1 << num
		v[num] = x
		rec = rec[n:]
	}
	return v, nil
}

func decodeHead(rec []byte) (uint32, error) {
	v, err := decodeFields(rec, 1)
	switch {
	case err != nil:
		return 0, err
	case !v.has(1):
		return 0, errors.New("no pages_id")
	case v[1] > math.MaxUint32:
		return 0, fmt.Errorf("pages_id %d overflows u32", v[1])
	}
	return uint32(v[1]), nil
}

func decodeEntry(b []byte, off int) (Entry, int, error) {
	rec, next, err := nextRecord(b, off)
	if err != nil {
		return Entry{}, 0, err
	}
	v, err := decodeFields(rec, 5)
	if err != nil {
		return Entry{}, 0, err
	}
	switch {
	case !v.has(1):
		return Entry{}, 0, errors.New("no vaddr")
	case !v.has(2): // required in the proto, so CRIU's unpacking fails too
		return Entry{}, 0, errors.New("no compat_nr_pages")
	case v[2] > math.MaxUint32:
		return Entry{}, 0, fmt.Errorf("compat_nr_pages %d overflows u32", v[2])
	case v[3] > 1:
		return Entry{}, 0, fmt.Errorf("in_parent %d is not a bool", v[3])
	case v[4] > math.MaxUint32:
		return Entry{}, 0, fmt.Errorf("flags %#x overflow u32", v[4])
	}
	// As CRIU's init_compat_pagemap_entry: old images have in_parent or
	// no flags, and only compat_nr_pages.
	e := Entry{Vaddr: v[1], NrPages: v[2], Flags: uint32(v[4])}
	if v.has(5) {
		e.NrPages = v[5]
	}
	if v[3] == 1 {
		e.Flags |= FlagParent
	} else if !v.has(4) {
		e.Flags = FlagPresent
	}
	return e, next, checkEntry(e)
}

// checkEntry checks what MergeParent and ReadPages rely on in one entry.
func checkEntry(e Entry) error {
	switch e.Flags {
	case FlagParent, FlagLazy, FlagPresent, FlagPresent | FlagLazy: // what page-xfer.c writes
	default:
		return fmt.Errorf("flags %#x are not PE_PARENT, PE_LAZY, PE_PRESENT or PE_PRESENT|PE_LAZY", e.Flags)
	}
	if e.NrPages == 0 {
		return fmt.Errorf("no pages at %#x", e.Vaddr)
	}
	if e.Vaddr%pageSize != 0 {
		return fmt.Errorf("vaddr %#x not page aligned", e.Vaddr)
	}
	if e.NrPages > (math.MaxUint64-e.Vaddr)/pageSize {
		return fmt.Errorf("%d pages at %#x overflow the address space", e.NrPages, e.Vaddr)
	}
	return nil
}

func checkOrder(prev, e Entry) error {
	if e.Vaddr < prev.Vaddr {
		return fmt.Errorf("%#x descends from the previous entry's %#x", e.Vaddr, prev.Vaddr)
	}
	if e.Vaddr < prev.End() {
		return fmt.Errorf("%#x overlaps the previous entry %v", e.Vaddr, prev)
	}
	return nil
}

// Encode encodes p as CRIU 4.2.1 does: for the same value the bytes are
// those of CRIU's file (fields in number order, compat_nr_pages 0, flags
// always written, in_parent never).
func (p *Pagemap) Encode() []byte {
	b := make([]byte, 0, 8+6+len(p.Entries)*28)
	b = binary.LittleEndian.AppendUint32(b, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, pagemapMagic)
	rec := protowire.AppendTag(nil, 1, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(p.PagesID))
	b = appendRecord(b, rec)
	for _, e := range p.Entries {
		rec = protowire.AppendTag(rec[:0], 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, e.Vaddr)
		rec = protowire.AppendTag(rec, 2, protowire.VarintType)
		rec = protowire.AppendVarint(rec, 0)
		rec = protowire.AppendTag(rec, 4, protowire.VarintType)
		rec = protowire.AppendVarint(rec, uint64(e.Flags))
		rec = protowire.AppendTag(rec, 5, protowire.VarintType)
		rec = protowire.AppendVarint(rec, e.NrPages)
		b = appendRecord(b, rec)
	}
	return b
}

func appendRecord(b, rec []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	return append(b, rec...)
}
