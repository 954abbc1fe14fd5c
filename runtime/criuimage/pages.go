// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReadPages calls fn with the address and content of every page of the
// full image pagemapName in dir (e.g. "pagemap-1.img"), in pagemap order.
// page is a buffer reused from call to call: fn must copy what it keeps.
// An entry whose data is not in the image (PE_PARENT, or lazy only) is an
// error, and so is a pages file whose size does not match the pagemap.
// fn's error is returned as is.
func ReadPages(dir, pagemapName string, fn func(vaddr uint64, page []byte) error) error {
	pm, err := ReadPagemap(filepath.Join(dir, pagemapName))
	if err != nil {
		return err
	}
	for _, e := range pm.Entries {
		if e.Flags&FlagPresent == 0 {
			return fmt.Errorf("read pages of %s: entry %v has no data in this image", pagemapName, e)
		}
	}
	path := filepath.Join(dir, pm.PagesFile())
	if _, err := checkPagesSize(path, pm); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	page := make([]byte, pageSize)
	for _, e := range pm.Entries {
		for va := e.Vaddr; va < e.End(); va += pageSize {
			if _, err := io.ReadFull(r, page); err != nil {
				return fmt.Errorf("read %s at page %#x: %w", path, va, err)
			}
			if err := fn(va, page); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeSegments writes segs back to back into dst, which it first sizes to
// the total (so that a tmpfs with huge=within_size gives it large folios).
// The sources are mapped and handed to pwritev in batches of iovecs: the
// kernel copies each page once, and the thousands of short runs of a dump
// whose dirty pages are scattered cost a few system calls, not one each.
func writeSegments(dst, own, parent *os.File, segs []segment) (int64, error) {
	var total int64
	for _, s := range segs {
		total += int64(s.len)
	}
	if err := dst.Truncate(total); err != nil {
		return 0, err
	}
	ownMap, err := mapFile(own)
	if err != nil {
		return 0, err
	}
	defer unmap(ownMap)
	parentMap, err := mapFile(parent)
	if err != nil {
		return 0, err
	}
	defer unmap(parentMap)

	const maxIovs = 1024 // IOV_MAX
	iovs := make([][]byte, 0, maxIovs)
	var off int64
	flush := func() error {
		for len(iovs) > 0 {
			n, err := unix.Pwritev(int(dst.Fd()), iovs, off)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", dst.Name(), err)
			}
			if n == 0 {
				return fmt.Errorf("write %s: %w", dst.Name(), io.ErrShortWrite)
			}
			off += int64(n)
			for n > 0 { // drop what was written
				if n >= len(iovs[0]) {
					n -= len(iovs[0])
					iovs = iovs[1:]
				} else {
					iovs[0] = iovs[0][n:]
					n = 0
				}
			}
		}
		iovs = iovs[:0]
		return nil
	}
	for _, s := range segs {
		src, f := ownMap, own
		if s.fromParent {
			src, f = parentMap, parent
		}
		if s.off+s.len > uint64(len(src)) {
			return 0, fmt.Errorf("copy from %s: %d bytes at %d, the file has %d: %w", f.Name(), s.len, s.off, len(src), io.ErrUnexpectedEOF)
		}
		iovs = append(iovs, src[s.off:s.off+s.len])
		if len(iovs) == maxIovs {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return total, nil
}

// mapFile maps f read-only, populated; nil for an empty file.
func mapFile(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		return nil, nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	return b, nil
}

func unmap(b []byte) {
	if b != nil {
		_ = unix.Munmap(b) // fails only for an address not mapped here
	}
}
