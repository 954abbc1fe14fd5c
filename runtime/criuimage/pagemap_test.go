// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/iorrc/rrc/test/prereq"
)

// realPagemap is the pagemap of `sleep 1000` dumped by CRIU 4.2.1 (x86-64,
// 4 KiB pages); its pages-1.img was 126976 bytes.
const realPagemap = "testdata/criu-4.2.1-sleep-pagemap.img"

const realPagemapPages = 126976 / 4096

// field is one varint field of a hand-made record.
type field struct {
	num protowire.Number
	val uint64
}

func record(fs ...field) []byte {
	var b []byte
	for _, f := range fs {
		b = protowire.AppendTag(b, f.num, protowire.VarintType)
		b = protowire.AppendVarint(b, f.val)
	}
	return b
}

// image frames records after the two magics.
func image(recs ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, pagemapMagic)
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

var head1 = record(field{1, 1})

// entry is a record as CRIU 4.2.1 writes it.
func entry(vaddr, nr uint64, flags uint32) []byte {
	return record(field{1, vaddr}, field{2, 0}, field{4, uint64(flags)}, field{5, nr})
}

func TestPagemapRoundTrip(t *testing.T) {
	ps := pageSize
	tests := []struct {
		name string
		pm   Pagemap
	}{
		{"no entries", Pagemap{PagesID: 3}},
		{"one entry", Pagemap{PagesID: 1, Entries: []Entry{{Vaddr: 0x400000, NrPages: 1, Flags: FlagPresent}}}},
		{"all flag kinds, contiguous and sparse", Pagemap{PagesID: 0, Entries: []Entry{
			{Vaddr: 0, NrPages: 2, Flags: FlagPresent},
			{Vaddr: 2 * ps, NrPages: 1, Flags: FlagParent},
			{Vaddr: 10 * ps, NrPages: 5, Flags: FlagPresent | FlagLazy},
			{Vaddr: 0x7ffcb79b8000, NrPages: 33, Flags: FlagLazy},
		}}},
		{"huge values", Pagemap{PagesID: 1<<32 - 1, Entries: []Entry{
			{Vaddr: math.MaxUint64 - 2*ps + 1, NrPages: 1, Flags: FlagPresent},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodePagemap(tt.pm.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.pm) {
				t.Errorf("decoded %+v, want %+v", *got, tt.pm)
			}
		})
	}
}

// Old images: in_parent instead of flags, only compat_nr_pages.
func TestDecodePagemapCompat(t *testing.T) {
	b := image(head1,
		record(field{1, 0x1000}, field{2, 2}),              // no flags: present
		record(field{1, 0x3000}, field{2, 1}, field{3, 1}), // in_parent
		record(field{1, 0x4000}, field{2, 7}, field{5, 3}), // nr_pages wins
		record(field{1, 0x7000}, field{2, 1}, field{3, 0}, field{4, FlagLazy}))
	got, err := DecodePagemap(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{0x1000, 2, FlagPresent}, {0x3000, 1, FlagParent}, {0x4000, 3, FlagPresent}, {0x7000, 1, FlagLazy}}
	if !reflect.DeepEqual(got.Entries, want) {
		t.Errorf("entries %v, want %v", got.Entries, want)
	}
}

func TestDecodePagemapErrors(t *testing.T) {
	ok := image(head1, entry(0x1000, 1, FlagPresent))
	badMagic := bytes.Clone(ok)
	badMagic[0] ^= 1
	notPagemap := bytes.Clone(ok)
	binary.LittleEndian.PutUint32(notPagemap[4:], 0x55105940)
	oversize := image(head1)
	oversize = binary.LittleEndian.AppendUint32(oversize, maxRecordSize+1)
	oversize = append(oversize, make([]byte, maxRecordSize+1)...)

	tests := []struct {
		name    string
		b       []byte
		wantErr string
	}{
		{"empty", nil, "too short for the image magic"},
		{"bad common magic", badMagic, "image magic 0x54564318, want 0x54564319"},
		{"other image's magic", notPagemap, "magic 0x55105940 is not a pagemap's"},
		{"no head", image(), "no head record"},
		{"truncated length", ok[:len(ok)-len(entry(0x1000, 1, FlagPresent))-2], "entry 0 at offset 14: record length truncated (2 of 4 bytes)"},
		{"truncated record", ok[:len(ok)-1], "entry 0 at offset 14: record of 9 bytes truncated to 8"},
		{"oversize record", oversize, "record of 129 bytes, more than 128"},
		{"oversize file", make([]byte, MaxPagemapSize+1), "more than 67108864 bytes"},
		{"head without pages_id", image(nil), "head record: no pages_id"},
		{"head with unknown field", image(record(field{1, 1}, field{2, 1})), "head record: unknown field 2"},
		{"pages_id overflow", image(record(field{1, 1 << 32})), "pages_id 4294967296 overflows u32"},
		{"no vaddr", image(head1, record(field{2, 1})), "entry 0 at offset 14: no vaddr"},
		{"no compat_nr_pages", image(head1, record(field{1, 0}, field{5, 1})), "no compat_nr_pages"},
		{"unknown field", image(head1, record(field{1, 0}, field{2, 1}, field{6, 1})), "unknown field 6"},
		{"repeated field", image(head1, record(field{1, 0}, field{1, 0}, field{2, 1})), "field 1 repeated"},
		{"wrong wire type", image(head1, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil)), "field 1 has wire type 2, want varint"},
		{"bad tag", image(head1, []byte{0x00}), "bad field tag"},
		{"truncated varint", image(head1, []byte{0x08, 0x80}), "field 1: unexpected EOF"},
		{"in_parent not bool", image(head1, record(field{1, 0}, field{2, 1}, field{3, 2})), "in_parent 2 is not a bool"},
		{"unknown flag", image(head1, entry(0, 1, 8)), "flags 0x8 are not"},
		{"parent and present", image(head1, entry(0, 1, FlagParent|FlagPresent)), "flags 0x5 are not"},
		{"no flags", image(head1, entry(0, 1, 0)), "flags 0x0 are not"},
		{"zero pages", image(head1, entry(0x1000, 0, FlagPresent)), "no pages at 0x1000"},
		{"unaligned", image(head1, entry(0x1001, 1, FlagPresent)), "vaddr 0x1001 not page aligned"},
		{"end overflows", image(head1, entry(math.MaxUint64-pageSize+1, 1, FlagPresent)), "overflow the address space"},
		{"overlapping", image(head1, entry(0x1000, 2, FlagPresent), entry(0x2000, 1, FlagParent)), "entry 1 at offset 27: 0x2000 overlaps the previous entry 0x1000-0x3000"},
		{"descending", image(head1, entry(0x5000, 1, FlagPresent), entry(0x2000, 1, FlagPresent)), "0x2000 descends from the previous entry's 0x5000"},
		{"duplicate", image(head1, entry(0x5000, 1, FlagPresent), entry(0x5000, 1, FlagPresent)), "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePagemap(tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "decode pagemap: ") {
				t.Fatalf("DecodePagemap = %+v, %v; want error %q", p, err, tt.wantErr)
			}
		})
	}
}

// A pagemap CRIU wrote: it decodes, and re-encodes to CRIU's very bytes.
func TestRealCRIUPagemap(t *testing.T) {
	if pageSize != 4096 {
		prereq.Missing(t, "4 KiB pages (the checked-in image was made with them; this machine has %d)", pageSize)
	}
	b, err := os.ReadFile(realPagemap)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := ReadPagemap(realPagemap)
	if err != nil {
		t.Fatal(err)
	}
	if pm.PagesID != 1 || pm.PresentPages() != realPagemapPages || pm.HasParent() {
		t.Errorf("pages id %d, %d present pages, parent %v; want 1, %d, false", pm.PagesID, pm.PresentPages(), pm.HasParent(), realPagemapPages)
	}
	// Private anonymous memory is PE_PRESENT|PE_LAZY even in a plain dump.
	flags := map[uint32]int{}
	for _, e := range pm.Entries {
		flags[e.Flags]++
	}
	if flags[FlagPresent] == 0 || flags[FlagPresent|FlagLazy] == 0 || len(flags) != 2 {
		t.Errorf("entry flags %v, want both PE_PRESENT and PE_PRESENT|PE_LAZY", flags)
	}
	if enc := pm.Encode(); !bytes.Equal(enc, b) {
		t.Errorf("Encode differs from CRIU's file:\n%x\n%x", enc, b)
	}
}

func FuzzDecodePagemap(f *testing.F) {
	f.Add(image(head1, entry(0x1000, 2, FlagPresent), entry(0x3000, 1, FlagParent), entry(0x9000, 4, FlagPresent|FlagLazy)))
	f.Add(image(head1, record(field{1, 0x1000}, field{2, 2}), record(field{1, 0x3000}, field{2, 1}, field{3, 1})))
	f.Add(image(record(field{1, 7})))
	if b, err := os.ReadFile(realPagemap); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePagemap(b)
		if err != nil {
			return
		}
		enc := p.Encode()
		q, err := DecodePagemap(enc)
		if err != nil {
			t.Fatalf("re-encoding of %+v does not decode: %v", p, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", p, q)
		}
		if !bytes.Equal(q.Encode(), enc) {
			t.Fatal("encoding is not stable")
		}
	})
}
