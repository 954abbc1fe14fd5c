// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	Start, End uint64
	Perms      string // e.g. "rw-p"
	Inode      uint64
	Path       string // "" for an unnamed anonymous mapping
}

// parseMaps parses the content of /proc/PID/maps.
func parseMaps(r io.Reader) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20) // paths are at most PATH_MAX, plus the fields
	for line := 1; sc.Scan(); line++ {
		m, err := parseMapsLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("maps line %d %q: %w", line, sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read maps: %w", err)
	}
	return out, nil
}

// parseMapsLine parses "start-end perms offset dev inode [path]". The path
// is whatever follows the inode after the padding, spaces included.
func parseMapsLine(b []byte) (mapping, error) {
	var fields [5][]byte
	rest := b
	for i := range fields {
		rest = bytes.TrimLeft(rest, " ")
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			if i < len(fields)-1 {
				return mapping{}, fmt.Errorf("%d fields, want at least 5", i+1)
			}
			j = len(rest)
		}
		fields[i], rest = rest[:j], rest[j:]
	}
	var m mapping
	addrs := string(fields[0])
	dash := strings.IndexByte(addrs, '-')
	if dash < 0 {
		return mapping{}, fmt.Errorf("address range %q has no '-'", addrs)
	}
	var err error
	if m.Start, err = strconv.ParseUint(addrs[:dash], 16, 64); err != nil {
		return mapping{}, fmt.Errorf("start address: %w", err)
	}
	if m.End, err = strconv.ParseUint(addrs[dash+1:], 16, 64); err != nil {
		return mapping{}, fmt.Errorf("end address: %w", err)
	}
	if m.End <= m.Start {
		return mapping{}, fmt.Errorf("empty address range %q", addrs)
	}
	if len(fields[1]) != 4 {
		return mapping{}, fmt.Errorf("permissions %q: want 4 characters", fields[1])
	}
	m.Perms = string(fields[1])
	if m.Inode, err = strconv.ParseUint(string(fields[4]), 10, 64); err != nil {
		return mapping{}, fmt.Errorf("inode: %w", err)
	}
	m.Path = string(bytes.TrimLeft(rest, " "))
	return m, nil
}

// trackable reports whether m is registered for write tracking: every
// private mapping but the kernel's own ([vdso], [vvar], [vsyscall], ...):
// anonymous memory, and the private file mappings whose pages the process
// has copied on write (the relocated parts of its libraries, hundreds of
// pages that never change again). Shared mappings are not: CRIU does not
// dump a shared file's pages, and shared memory has its own images.
//
// A zapped page of a registered file mapping (MADV_DONTNEED, reclaim) keeps
// a uffd-wp marker that the pagemap reports as swapped and not written;
// the reader of the bits (criu-written) counts only present pages as
// possibly clean, so a marker never passes for an unchanged page.
func (m mapping) trackable() bool {
	if m.Perms[3] != 'p' {
		return false
	}
	if strings.HasPrefix(m.Path, "[") {
		// Named with PR_SET_VMA_ANON_NAME: "[anon:..."; shared ones are
		// "[anon_shmem:...", and shared anyway.
		return m.Path == "[heap]" || m.Path == "[stack]" || strings.HasPrefix(m.Path, "[anon:")
	}
	return true
}

// trackableRuns returns the address ranges covered by runs of consecutive
// trackable mappings of maps (sorted, as /proc/PID/maps is): each range
// holds trackable mappings and unmapped gaps only.
func trackableRuns(maps []mapping) []Range {
	var out []Range
	in := false
	for _, m := range maps {
		switch {
		case !m.trackable():
			in = false
		case in:
			out[len(out)-1].End = m.End
		default:
			out = append(out, Range{m.Start, m.End})
			in = true
		}
	}
	return out
}

// findMapping returns the first mapping named path.
func findMapping(maps []mapping, path string) (mapping, bool) {
	for _, m := range maps {
		if m.Path == path {
			return m, true
		}
	}
	return mapping{}, false
}
