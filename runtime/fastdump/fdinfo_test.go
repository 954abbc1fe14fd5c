// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseFDInfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want FDInfo
		ok   bool
	}{
		{"file", "pos:\t12\nflags:\t0100002\nmnt_id:\t23\nino:\t3\n", FDInfo{Pos: 12, Flags: 0o100002, MntID: 23, Ino: 3}, true},
		{"epoll", "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\ntfd:        4 events:       19 data:                4  pos:0 ino:8ba22a sdev:f\n" +
			"tfd:       10 events:       1d data:        ffffffffffffffff  pos:0 ino:11 sdev:9\n",
			FDInfo{Flags: 0o2000002, MntID: 17, Ino: 1038, Epoll: []EpollTarget{
				{TFD: 4, Events: 0x19, Data: 4, Ino: 0x8ba22a, Dev: 0xf},
				{TFD: 10, Events: 0x1d, Data: ^uint64(0), Ino: 0x11, Dev: 9},
			}}, true},
		{"other lines skipped", "pos:\t0\nflags:\t02\neventfd-count: 5\n", FDInfo{Flags: 2}, true},
		{"no flags", "pos:\t0\n", FDInfo{}, false},
		{"flags not octal", "pos:\t0\nflags:\t09\n", FDInfo{}, false},
		{"pos twice", "pos:\t0\npos:\t1\nflags:\t0\n", FDInfo{}, false},
		{"tfd short", "pos:\t0\nflags:\t0\ntfd: 4 events: 19\n", FDInfo{}, false},
		{"tfd unknown field", "pos:\t0\nflags:\t0\ntfd: 4 events: 19 data: 4 pos:0 ino:1 sdev:2 x:1\n", FDInfo{}, false},
		{"tfd bad hex", "pos:\t0\nflags:\t0\ntfd: 4 events: zz data: 4 pos:0 ino:1 sdev:2\n", FDInfo{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFDInfo([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestParseFDInfoOfThisProcess reads a real epoll instance's fdinfo.
func TestParseFDInfoOfThisProcess(t *testing.T) {
	ep, err := syscall.EpollCreate1(0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(ep)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(r.Fd())}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, int(r.Fd()), &ev); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(ep))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := ParseFDInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Epoll) != 1 || fi.Epoll[0].TFD != int(r.Fd()) || fi.Epoll[0].Events != syscall.EPOLLIN|syscall.EPOLLERR|syscall.EPOLLHUP {
		t.Errorf("epoll targets %+v, want fd %d for EPOLLIN (and the ERR and HUP the kernel adds)", fi.Epoll, r.Fd())
	}
}

func FuzzParseFDInfo(f *testing.F) {
	f.Add([]byte("pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\ntfd:        4 events:       19 data:                4  pos:0 ino:8ba22a sdev:f\n"))
	f.Add([]byte("pos:\t12\nflags:\t0100002\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := ParseFDInfo(b)
		if err != nil {
			return
		}
		for _, e := range fi.Epoll {
			if e.TFD < 0 && !strings.Contains(string(b), "-") {
				t.Fatalf("negative target %d from no minus sign", e.TFD)
			}
		}
	})
}
