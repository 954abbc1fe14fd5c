// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestRestartRegs(t *testing.T) {
	const rip = 0x401000
	neg := func(e int64) uint64 { return uint64(-e) }
	for _, tc := range []struct {
		name             string
		origRax, rax     uint64
		wantRax, wantRip uint64
	}{
		{"user mode", ^uint64(0), 7, 7, rip},
		{"read -ERESTARTSYS", 0, neg(errRestartSys), 0, rip - 2},
		{"wait4 -ERESTARTNOINTR", 61, neg(errRestartNoIntr), 61, rip - 2},
		{"select -ERESTARTNOHAND", 23, neg(errRestartNoHand), 23, rip - 2},
		{"nanosleep -ERESTART_RESTARTBLOCK", 35, neg(errRestartRestartBlock), sysRestartSyscall, rip - 2},
		{"completed read", 0, 12, 12, rip},
		{"failed read -EINTR", 0, neg(4), neg(4), rip},
		{"-ERESTARTSYS outside a system call", ^uint64(0), neg(errRestartSys), neg(errRestartSys), rip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := unix.PtraceRegs{Orig_rax: tc.origRax, Rax: tc.rax, Rip: rip, Rdi: 9, Rsp: 0x7ffc0000}
			got := restartRegs(saved)
			if got.Rax != tc.wantRax || got.Rip != tc.wantRip || got.Orig_rax != ^uint64(0) {
				t.Fatalf("rax %#x rip %#x orig_rax %#x; want rax %#x rip %#x orig_rax -1",
					got.Rax, got.Rip, got.Orig_rax, tc.wantRax, tc.wantRip)
			}
			if got.Rdi != saved.Rdi || got.Rsp != saved.Rsp {
				t.Fatalf("other registers changed: %+v", got)
			}
		})
	}
}
