// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// FDInfo is what /proc/<pid>/fdinfo/<fd> says of a descriptor that can
// change while the descriptor stays the same: its position and flags, and
// for an epoll instance what it watches.
type FDInfo struct {
	Pos   int64
	Flags uint32
	MntID int
	Ino   uint64
	Epoll []EpollTarget
}

// EpollTarget is one "tfd:" line of an epoll instance's fdinfo: a watched
// descriptor and how (CRIU's EventpollTfdEntry).
type EpollTarget struct {
	TFD    int
	Events uint32
	Data   uint64
	Pos    int64
	Ino    uint64
	Dev    uint32
}

// maxFDInfo bounds what ParseFDInfo reads: an epoll instance watching
// thousands of descriptors has a line per descriptor.
const maxFDInfo = 16 << 20

// ParseFDInfo decodes an fdinfo file. Lines it does not know (those of
// other kinds of descriptors) are skipped; the fields it knows must be well
// formed.
func ParseFDInfo(b []byte) (FDInfo, error) {
	var fi FDInfo
	if len(b) > maxFDInfo {
		return fi, fmt.Errorf("fdinfo: %d bytes, more than %d", len(b), maxFDInfo)
	}
	seen := map[string]bool{}
	for n, line := range bytes.Split(b, []byte("\n")) {
		key, val, ok := strings.Cut(string(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "pos":
			fi.Pos, err = strconv.ParseInt(val, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(val, 8, 32)
			fi.Flags = uint32(f)
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(val)
		case "ino":
			fi.Ino, err = strconv.ParseUint(val, 10, 64)
		case "tfd":
			var t EpollTarget
			t, err = parseTFD(string(line))
			fi.Epoll = append(fi.Epoll, t)
		default:
			continue
		}
		if err != nil {
			return fi, fmt.Errorf("fdinfo line %d %q: %w", n+1, line, err)
		}
		if key != "tfd" {
			if seen[key] {
				return fi, fmt.Errorf("fdinfo line %d: %s twice", n+1, key)
			}
			seen[key] = true
		}
	}
	if !seen["pos"] || !seen["flags"] {
		return fi, fmt.Errorf("fdinfo: no pos or flags line")
	}
	return fi, nil
}

// parseTFD parses "tfd: 5 events: 19 data: 5 pos:0 ino:7a sdev:8" (the
// numbers after tfd and pos decimal, the rest hexadecimal).
func parseTFD(line string) (EpollTarget, error) {
	var t EpollTarget
	f := strings.Fields(strings.NewReplacer(":", ": ").Replace(line))
	if len(f)%2 != 0 {
		return t, fmt.Errorf("odd number of fields")
	}
	seen := 0
	for i := 0; i < len(f); i += 2 {
		key, val := strings.TrimSuffix(f[i], ":"), f[i+1]
		var err error
		var u uint64
		switch key {
		case "tfd":
			t.TFD, err = strconv.Atoi(val)
		case "events":
			u, err = strconv.ParseUint(val, 16, 32)
			t.Events = uint32(u)
		case "data":
			t.Data, err = strconv.ParseUint(val, 16, 64)
		case "pos":
			t.Pos, err = strconv.ParseInt(val, 10, 64)
		case "ino":
			t.Ino, err = strconv.ParseUint(val, 16, 64)
		case "sdev":
			u, err = strconv.ParseUint(val, 16, 32)
			t.Dev = uint32(u)
		default:
			return t, fmt.Errorf("unknown field %q", key)
		}
		if err != nil {
			return t, fmt.Errorf("%s: %w", key, err)
		}
		seen++
	}
	if seen != 6 {
		return t, fmt.Errorf("%d of the 6 fields", seen)
	}
	return t, nil
}
