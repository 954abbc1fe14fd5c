// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMapsLine(t *testing.T) {
	for _, tc := range []struct {
		line      string
		want      mapping
		trackable bool
		err       bool
	}{
		{line: "56529abac000-56529abae000 r--p 00000000 fe:00 247026                     /usr/bin/cat",
			want: mapping{0x56529abac000, 0x56529abae000, "r--p", 247026, "/usr/bin/cat"}, trackable: true},
		{line: "5652d8390000-5652d83b1000 rw-p 00000000 00:00 0                          [heap]",
			want: mapping{0x5652d8390000, 0x5652d83b1000, "rw-p", 0, "[heap]"}, trackable: true},
		{line: "7f9fafaa2000-7f9fafac4000 rw-p 00000000 00:00 0 ",
			want: mapping{0x7f9fafaa2000, 0x7f9fafac4000, "rw-p", 0, ""}, trackable: true},
		{line: "7f9fafaa2000-7f9fafac4000 ---p 00000000 00:00 0",
			want: mapping{0x7f9fafaa2000, 0x7f9fafac4000, "---p", 0, ""}, trackable: true},
		{line: "7ffc1e5d6000-7ffc1e5f7000 rw-p 00000000 00:00 0                          [stack]",
			want: mapping{0x7ffc1e5d6000, 0x7ffc1e5f7000, "rw-p", 0, "[stack]"}, trackable: true},
		{line: "7f0000000000-7f0000100000 rw-p 00000000 00:00 0                          [anon:jemalloc pages]",
			want: mapping{0x7f0000000000, 0x7f0000100000, "rw-p", 0, "[anon:jemalloc pages]"}, trackable: true},
		{line: "7f0000000000-7f0000100000 rw-s 00000000 00:01 1234                       [anon_shmem:buf]",
			want: mapping{0x7f0000000000, 0x7f0000100000, "rw-s", 1234, "[anon_shmem:buf]"}},
		{line: "7f0000000000-7f0000100000 rw-s 00000000 00:01 5678                       /dev/zero (deleted)",
			want: mapping{0x7f0000000000, 0x7f0000100000, "rw-s", 5678, "/dev/zero (deleted)"}},
		{line: "7f0000000000-7f0000100000 rw-s 00000000 00:01 9                          /memfd:data (deleted)",
			want: mapping{0x7f0000000000, 0x7f0000100000, "rw-s", 9, "/memfd:data (deleted)"}},
		{line: "7f0000000000-7f0000200000 rw-p 00000000 00:0f 77                         /anon_hugepage (deleted)",
			want: mapping{0x7f0000000000, 0x7f0000200000, "rw-p", 77, "/anon_hugepage (deleted)"}, trackable: true},
		{line: "7f9fafd14000-7f9fafd18000 r--p 00000000 00:00 0                          [vvar]",
			want: mapping{0x7f9fafd14000, 0x7f9fafd18000, "r--p", 0, "[vvar]"}},
		{line: "7f9fafd18000-7f9fafd1a000 r--p 00000000 00:00 0                          [vvar_vclock]",
			want: mapping{0x7f9fafd18000, 0x7f9fafd1a000, "r--p", 0, "[vvar_vclock]"}},
		{line: "7ffd5a3f0000-7ffd5a3f2000 r-xp 00000000 00:00 0                          [vdso]",
			want: mapping{0x7ffd5a3f0000, 0x7ffd5a3f2000, "r-xp", 0, "[vdso]"}},
		{line: "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
			want: mapping{0xffffffffff600000, 0xffffffffff601000, "--xp", 0, "[vsyscall]"}},
		{line: "7f9fafcfa000-7f9fafcfc000 rw-p 001d3000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6",
			want: mapping{0x7f9fafcfa000, 0x7f9fafcfc000, "rw-p", 326269, "/usr/lib/x86_64-linux-gnu/libc.so.6"}, trackable: true},
		{line: "7f0000000000-7f0000001000 rw-p 00000000 fe:00 42                         /tmp/a file with  spaces",
			want: mapping{0x7f0000000000, 0x7f0000001000, "rw-p", 42, "/tmp/a file with  spaces"}, trackable: true},
		{line: "", err: true},
		{line: "7f0000000000-7f0000001000 rw-p 00000000 00:00", err: true},
		{line: "7f0000000000 rw-p 00000000 00:00 0", err: true},
		{line: "7f0000001000-7f0000000000 rw-p 00000000 00:00 0", err: true},
		{line: "7f0000000000-7f0000001000 rw 00000000 00:00 0", err: true},
		{line: "7f0000000000-7f0000001000 rw-p 00000000 00:00 x", err: true},
		{line: "xyz-7f0000001000 rw-p 00000000 00:00 0", err: true},
	} {
		t.Run(tc.line, func(t *testing.T) {
			m, err := parseMapsLine([]byte(tc.line))
			if tc.err {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error", m)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Fatalf("got %+v, want %+v", m, tc.want)
			}
			if m.trackable() != tc.trackable {
				t.Fatalf("trackable %v, want %v", m.trackable(), tc.trackable)
			}
		})
	}
}

func TestParseMaps(t *testing.T) {
	in := "5652d8390000-5652d83b1000 rw-p 00000000 00:00 0                          [heap]\n" +
		"7f9fafaa2000-7f9fafac4000 rw-p 00000000 00:00 0 \n"
	maps, err := parseMaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 2 || maps[0].Path != "[heap]" || maps[1].Start != 0x7f9fafaa2000 {
		t.Fatalf("got %+v", maps)
	}
	if _, err := parseMaps(strings.NewReader(in + "garbage\n")); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("error %v, want one naming line 3", err)
	}
}

func TestParseStartTime(t *testing.T) {
	rest := " S 1 1 1 0 -1 4194560 1000 0 0 0 5 3 0 0 20 0 1 0 123456789 10000000 500 18446744073709551615"
	for _, tc := range []struct {
		name, stat string
		want       uint64
		err        bool
	}{
		{"plain", "42 (redis-server)" + rest, 123456789, false},
		{"name with spaces and parens", "42 (a) b (c))" + rest, 123456789, false},
		{"truncated", "42 (x) S 1 1 1", 0, true},
		{"no name", "42 x S", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tc.stat))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         targetStatus
		err          bool
	}{
		{"no filter", "Name:\tredis\nTgid:\t42\nPid:\t42\nSeccomp:\t0\nSeccomp_filters:\t0\n", targetStatus{42, 0}, false},
		{"filter", "Tgid:\t42\nSeccomp:\t2\nSeccomp_filters:\t1\n", targetStatus{42, 2}, false},
		{"thread", "Tgid:\t42\nPid:\t43\nSeccomp:\t0\n", targetStatus{42, 0}, false},
		{"no seccomp line", "Tgid:\t42\n", targetStatus{42, 0}, false},
		{"no tgid", "Seccomp:\t0\n", targetStatus{}, true},
		{"bad number", "Tgid:\tx\n", targetStatus{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tc.status))
			if tc.err {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestTrackableRuns(t *testing.T) {
	anon := func(s, e uint64) mapping { return mapping{s, e, "rw-p", 0, ""} }
	file := func(s, e uint64) mapping { return mapping{s, e, "r--p", 7, "/lib/x.so"} }
	shared := func(s, e uint64) mapping { return mapping{s, e, "rw-s", 8, "/dev/shm/x"} }
	for _, tc := range []struct {
		name string
		maps []mapping
		want []Range
	}{
		{"none", nil, nil},
		{"shared only", []mapping{shared(0x1000, 0x2000)}, nil},
		{"private file", []mapping{file(0x1000, 0x2000), anon(0x2000, 0x3000)}, []Range{{0x1000, 0x3000}}},
		{"one", []mapping{anon(0x1000, 0x2000)}, []Range{{0x1000, 0x2000}}},
		{"adjacent and with a gap", []mapping{anon(0x1000, 0x2000), anon(0x2000, 0x3000), anon(0x8000, 0x9000)},
			[]Range{{0x1000, 0x9000}}},
		{"split by a shared mapping", []mapping{anon(0x1000, 0x2000), shared(0x2000, 0x3000), anon(0x3000, 0x4000), {0x4000, 0x5000, "rw-p", 0, "[heap]"}},
			[]Range{{0x1000, 0x2000}, {0x3000, 0x5000}}},
		{"split by vdso", []mapping{anon(0x1000, 0x2000), {0x2000, 0x3000, "r-xp", 0, "[vdso]"}, anon(0x3000, 0x4000)},
			[]Range{{0x1000, 0x2000}, {0x3000, 0x4000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := trackableRuns(tc.maps); !slices.Equal(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}
