// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"encoding/binary"
	"testing"

	corex86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	"golang.org/x/sys/unix"
)

func TestCRIURestart(t *testing.T) {
	neg := func(e int64) uint64 { return uint64(-e) }
	tests := []struct {
		name           string
		orig, ax, ip   uint64
		wantAx, wantIP uint64
	}{
		{"not in a system call", ^uint64(0), 5, 100, 5, 100},
		{"returned", 7, 0, 100, 0, 100},
		{"ERESTARTSYS", 7, neg(errRestartSys), 100, 7, 98},
		{"ERESTARTNOINTR", 7, neg(errRestartNoIntr), 100, 7, 98},
		{"ERESTARTNOHAND", 232, neg(errRestartNoHand), 100, 232, 98},
		{"ERESTART_RESTARTBLOCK", 35, neg(errRestartRestartBlock), 100, neg(int64(unix.EINTR)), 100},
		{"EINTR", 232, neg(int64(unix.EINTR)), 100, neg(int64(unix.EINTR)), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := criuRestart(unix.PtraceRegs{Orig_rax: tt.orig, Rax: tt.ax, Rip: tt.ip})
			if r.Rax != tt.wantAx || r.Rip != tt.wantIP || r.Orig_rax != tt.orig {
				t.Errorf("ax %#x ip %d orig %#x, want ax %#x ip %d", r.Rax, r.Rip, r.Orig_rax, tt.wantAx, tt.wantIP)
			}
		})
	}
}

func TestSetFPRegs(t *testing.T) {
	var layout xstateLayout
	layout.offset[featureYMM], layout.size[featureYMM] = 576, 256
	layout.offset[featurePKRU], layout.size[featurePKRU] = 2688, 8
	area := make([]byte, 2696)
	for i := range area {
		area[i] = byte(i)
	}
	entry := func(ymm, pkru int) *corex86.UserX86FpregsEntry {
		return &corex86.UserX86FpregsEntry{StSpace: make([]uint32, 32), XmmSpace: make([]uint32, 64),
			Xsave: &corex86.UserX86XsaveEntry{YmmhSpace: make([]uint32, ymm), Pkru: make([]uint32, pkru)}}
	}
	tests := []struct {
		name string
		fp   *corex86.UserX86FpregsEntry
		area []byte
		ok   bool
	}{
		{"components of the image", entry(64, 2), area, true},
		{"no pkru in the image", entry(64, 0), area, true},
		{"size differs", entry(32, 0), area, false},
		{"area short", entry(64, 2), area[:600], false},
		{"no header", entry(0, 0), area[:500], false},
		{"legacy arrays missing", &corex86.UserX86FpregsEntry{}, area, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := setFPRegs(tt.fp, tt.area, layout)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err != nil {
				return
			}
			if got, want := tt.fp.GetMxcsr(), binary.LittleEndian.Uint32(area[24:]); got != want {
				t.Errorf("mxcsr %#x, want %#x", got, want)
			}
			if got, want := tt.fp.XmmSpace[0], binary.LittleEndian.Uint32(area[160:]); got != want {
				t.Errorf("xmm0 %#x, want %#x", got, want)
			}
			if got, want := tt.fp.Xsave.GetXstateBv(), binary.LittleEndian.Uint64(area[512:]); got != want {
				t.Errorf("xstate_bv %#x, want %#x", got, want)
			}
			if got, want := tt.fp.Xsave.YmmhSpace[0], binary.LittleEndian.Uint32(area[576:]); got != want {
				t.Errorf("ymmh0 %#x, want %#x", got, want)
			}
		})
	}
}
