// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Image tags: whose data a page is.
const (
	tagParent = 'p'
	tagInc    = 'i'
)

// pageData is the content the tests give page va of the image tagged tag,
// different for every page and image.
func pageData(tag byte, va uint64) []byte {
	b := make([]byte, pageSize)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], va+uint64(i)^uint64(tag)<<56)
	}
	return b
}

// writeImage writes pagemap name and its pages file, filled with
// pageData(tag, ·), to dir.
func writeImage(t *testing.T, dir, name string, id uint32, tag byte, entries []Entry) {
	t.Helper()
	pm := &Pagemap{PagesID: id, Entries: entries}
	var pages []byte
	for _, e := range entries {
		if e.Flags&FlagPresent != 0 {
			for va := e.Vaddr; va < e.End(); va += pageSize {
				pages = append(pages, pageData(tag, va)...)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name), pm.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pm.PagesFile()), pages, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot is a directory's files and contents (symlinks as their target).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		var b []byte
		if de.Type()&os.ModeSymlink != 0 {
			s, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte("-> " + s)
		} else if b, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		m[de.Name()] = string(b)
	}
	return m
}

// testImage is one pagemap of a test's dump or of its parent.
type testImage struct {
	name    string
	id      uint32
	entries []Entry
}

func pg(n uint64) uint64 { return n * pageSize }

const (
	P  = FlagPresent
	PL = FlagPresent | FlagLazy
	H  = FlagParent
)

type mergeTest struct {
	name          string
	inc, parent   []testImage
	corrupt       func(t *testing.T, dir, parentDir string)
	wantErr       string
	want          map[string][]Entry // merged pagemaps; the others must not change
	wantFromInc   map[string][]uint64
	wantParentPgs uint64
}

func TestMergeParent(t *testing.T) {
	base := uint64(0x7f0000000000)
	a := func(n uint64) uint64 { return base + pg(n) }
	tests := []mergeTest{
		{
			name:          "hole inside one parent entry",
			parent:        []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 8, P}}}},
			inc:           []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}, {a(2), 3, H}, {a(5), 3, P}}}},
			want:          map[string][]Entry{"pagemap-1.img": {{a(0), 8, P}}},
			wantFromInc:   map[string][]uint64{"pagemap-1.img": {a(0), a(1), a(5), a(6), a(7)}},
			wantParentPgs: 3,
		},
		{
			name:          "hole over two parent entries with no gap, other pages id",
			parent:        []testImage{{"pagemap-1.img", 7, []Entry{{a(0), 4, P}, {a(4), 4, PL}, {a(20), 1, P}}}},
			inc:           []testImage{{"pagemap-1.img", 2, []Entry{{a(0), 1, P}, {a(1), 6, H}, {a(7), 1, P}}}},
			want:          map[string][]Entry{"pagemap-1.img": {{a(0), 4, P}, {a(4), 3, PL}, {a(7), 1, P}}},
			wantFromInc:   map[string][]uint64{"pagemap-1.img": {a(0), a(7)}},
			wantParentPgs: 6,
		},
		{
			name:   "flags kept and coalesced",
			parent: []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}, {a(2), 6, PL}, {a(10), 2, P}}}},
			inc: []testImage{{"pagemap-1.img", 1, []Entry{
				{a(0), 2, PL}, {a(2), 2, H}, {a(4), 2, P}, {a(6), 1, H}, {a(7), 1, PL}, {a(10), 1, H}, {a(11), 1, P}}}},
			want:          map[string][]Entry{"pagemap-1.img": {{a(0), 4, PL}, {a(4), 2, P}, {a(6), 2, PL}, {a(10), 2, P}}},
			wantFromInc:   map[string][]uint64{"pagemap-1.img": {a(0), a(1), a(4), a(5), a(7), a(11)}},
			wantParentPgs: 4,
		},
		{
			name: "shmem and a full pagemap beside an incremental one",
			parent: []testImage{
				{"pagemap-1.img", 1, []Entry{{a(0), 2, P}}},
				{"pagemap-shmem-5.img", 2, []Entry{{0, 16, P}}},
			},
			inc: []testImage{
				{"pagemap-1.img", 1, []Entry{{a(0), 2, P}}},
				{"pagemap-2.img", 2, []Entry{{a(0), 1, P}}}, // no parent at all
				{"pagemap-shmem-5.img", 3, []Entry{{0, 1, H}, {pg(1), 1, P}, {pg(2), 14, H}}},
			},
			want:          map[string][]Entry{"pagemap-shmem-5.img": {{0, 16, P}}},
			wantFromInc:   map[string][]uint64{"pagemap-shmem-5.img": {pg(1)}},
			wantParentPgs: 15,
		},
		{
			name:   "no holes: left alone",
			parent: []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}}}},
			inc:    []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 1, P}, {a(1), 1, PL}}}},
			want:   map[string][]Entry{},
		},
		{
			name:    "hole with a gap in the parent",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}, {a(3), 2, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 5, H}}}},
			wantErr: fmt.Sprintf("pages %#x-%#x of the hole", a(2), a(3)),
		},
		{
			name:    "hole past the parent's end",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(1), 3, H}}}},
			wantErr: fmt.Sprintf("pages %#x-%#x of the hole", a(2), a(4)),
		},
		{
			name:    "hole before the parent's start",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(2), 2, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 4, H}}}},
			wantErr: fmt.Sprintf("pages %#x-%#x of the hole", a(0), a(2)),
		},
		{
			name:    "parent incremental",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 1, P}, {a(1), 1, H}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, H}}}},
			wantErr: "is not a full image",
		},
		{
			name:    "parent lazy only",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, FlagLazy}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, H}}}},
			wantErr: "have no data in the parent",
		},
		{
			name:    "lazy-only entry",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 1, H}, {a(1), 1, FlagLazy}}}},
			wantErr: "is lazy only",
		},
		{
			name:    "no parent pagemap",
			parent:  []testImage{{"pagemap-2.img", 1, []Entry{{a(0), 2, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 2, H}}}},
			wantErr: "no such file",
		},
		{
			name: "pages file truncated in dir",
			parent: []testImage{
				{"pagemap-1.img", 1, []Entry{{a(0), 4, P}}},
				{"pagemap-2.img", 2, []Entry{{a(0), 4, P}}},
			},
			inc: []testImage{
				{"pagemap-1.img", 1, []Entry{{a(0), 1, H}}},               // merged first
				{"pagemap-2.img", 2, []Entry{{a(0), 1, H}, {a(1), 2, P}}}, // then fails
			},
			corrupt: func(t *testing.T, dir, _ string) { truncate(t, filepath.Join(dir, "pages-2.img"), pg(1)) },
			wantErr: "pages-2.img is 4096 bytes, its pagemap's 2 present pages make 8192: corrupt or truncated",
		},
		{
			name:    "pages file too long in parent",
			parent:  []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 4, P}}}},
			inc:     []testImage{{"pagemap-1.img", 1, []Entry{{a(0), 1, H}}}},
			corrupt: func(t *testing.T, _, parentDir string) { truncate(t, filepath.Join(parentDir, "pages-1.img"), pg(5)) },
			wantErr: "corrupt or truncated",
		},
	}
	for _, tt := range tests {
		// Each case also with a spare file to write into
		// (MergeParentReusing): larger than needed, full of garbage.
		for _, withSpare := range []bool{false, true} {
			name := tt.name
			if withSpare {
				name += ", into a spare"
			}
			t.Run(name, func(t *testing.T) { mergeCase(t, tt, withSpare) })
		}
	}
}

func mergeCase(t *testing.T, tt mergeTest, withSpare bool) {
	root := t.TempDir()
	dir, parentDir := filepath.Join(root, "2"), filepath.Join(root, "1")
	for _, d := range []string{dir, parentDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, im := range tt.parent {
		writeImage(t, parentDir, im.name, im.id, tagParent, im.entries)
	}
	incs := map[string]testImage{}
	for _, im := range tt.inc {
		writeImage(t, dir, im.name, im.id, tagInc, im.entries)
		incs[im.name] = im
	}
	if err := os.Symlink("../1", filepath.Join(dir, parentLink)); err != nil {
		t.Fatal(err)
	}
	if tt.corrupt != nil {
		tt.corrupt(t, dir, parentDir)
	}
	before, parentBefore := snapshot(t, dir), snapshot(t, parentDir)
	spare := ""
	if withSpare {
		spare = filepath.Join(root, ".spare")
		if err := os.WriteFile(spare, bytes.Repeat([]byte{0xee}, 64*int(pageSize)), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	st, err := MergeParentReusing(dir, parentDir, spare)
	if spare != "" {
		if _, serr := os.Stat(spare); !os.IsNotExist(serr) {
			t.Errorf("spare still there after the merge (%v)", serr)
		}
	}
	if !reflect.DeepEqual(snapshot(t, parentDir), parentBefore) {
		t.Error("parent directory changed")
	}
	if tt.wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Fatalf("MergeParent = %+v, %v; want error %q", st, err, tt.wantErr)
		}
		if !reflect.DeepEqual(snapshot(t, dir), before) {
			t.Error("dir changed by a failed merge")
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dir)
	if _, ok := after[parentLink]; ok {
		t.Error("parent link left")
	}
	var ownPages uint64
	var bytesWritten int64
	for _, im := range tt.inc {
		want, merged := tt.want[im.name]
		if !merged {
			if after[im.name] != before[im.name] {
				t.Errorf("%s changed", im.name)
			}
			continue
		}
		checkMerged(t, dir, im, want, tt.wantFromInc[im.name])
		ownPages += uint64(len(tt.wantFromInc[im.name]))
		bytesWritten += int64(len(after[im.name]) + len(after[fmt.Sprintf("pages-%d.img", im.id)]))
	}
	for name := range after {
		if strings.HasPrefix(name, ".") {
			t.Errorf("temporary file %s left", name)
		}
	}
	wantSt := MergeStats{Files: len(tt.want), ParentPages: tt.wantParentPgs, OwnPages: ownPages, Bytes: bytesWritten}
	if st != wantSt {
		t.Errorf("stats %+v, want %+v", st, wantSt)
	}
}

// checkMerged checks a merged pagemap's entries and, page by page, that
// the pages at fromInc have the dump's own data and the others the parent's.
func checkMerged(t *testing.T, dir string, im testImage, want []Entry, fromInc []uint64) {
	t.Helper()
	pm, err := ReadPagemap(filepath.Join(dir, im.name))
	if err != nil {
		t.Fatal(err)
	}
	if pm.PagesID != im.id || !reflect.DeepEqual(pm.Entries, want) {
		t.Errorf("%s: pages id %d, entries %v; want %d, %v", im.name, pm.PagesID, pm.Entries, im.id, want)
	}
	own := map[uint64]bool{}
	for _, va := range fromInc {
		own[va] = true
	}
	n := 0
	err = ReadPages(dir, im.name, func(va uint64, page []byte) error {
		tag := byte(tagParent)
		if own[va] {
			tag = tagInc
		}
		if !bytes.Equal(page, pageData(tag, va)) {
			return fmt.Errorf("page %#x is not %q's", va, tag)
		}
		n++
		return nil
	})
	if err != nil {
		t.Errorf("%s: %v", im.name, err)
	}
	if uint64(n) != pm.PresentPages() {
		t.Errorf("%s: ReadPages gave %d pages, want %d", im.name, n, pm.PresentPages())
	}
}

func truncate(t *testing.T, path string, size uint64) {
	t.Helper()
	if err := os.Truncate(path, int64(size)); err != nil {
		t.Fatal(err)
	}
}
