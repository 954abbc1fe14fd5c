// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"encoding/binary"
	"errors"
	"fmt"

	corex86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criuimage"
)

// PatchCore returns the core image img (a core-<tid>.img of the previous
// checkpoint, whole file) with t's registers, extended state and signal
// mask, as CRIU would have written them for t now. leader says whether t is
// its process's first thread (CRIU keeps the leader's signal mask in the
// task core, the others' in the thread core). The extended-state
// components written are exactly those img already has.
func PatchCore(img []byte, t Thread, leader bool, layout xstateLayout) ([]byte, error) {
	rec, err := criuimage.DecodeCore(img)
	if err != nil {
		return nil, err
	}
	var core criucore.CoreEntry
	if err := proto.Unmarshal(rec, &core); err != nil {
		return nil, fmt.Errorf("core image of thread %d: %w", t.Tid, err)
	}
	ti := core.GetThreadInfo()
	if core.GetMtype() != criucore.CoreEntry_X86_64 || ti == nil || ti.GetGpregs() == nil || ti.GetFpregs() == nil {
		return nil, fmt.Errorf("core image of thread %d: not a native x86-64 thread with registers", t.Tid)
	}
	if ti.GetGpregs().GetMode() != corex86.UserX86RegsMode_NATIVE {
		return nil, fmt.Errorf("core image of thread %d: compat (32-bit) registers", t.Tid)
	}
	setGPRegs(ti.Gpregs, t)
	if err := setFPRegs(ti.Fpregs, t.XState, layout); err != nil {
		return nil, fmt.Errorf("core image of thread %d: %w", t.Tid, err)
	}
	switch {
	case leader && core.GetTc() != nil:
		core.Tc.BlkSigset = proto.Uint64(t.SigMask)
	case !leader && core.GetThreadCore() != nil:
		core.ThreadCore.BlkSigset = proto.Uint64(t.SigMask)
	default:
		return nil, fmt.Errorf("core image of thread %d: no place for its signal mask", t.Tid)
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(&core)
	if err != nil {
		return nil, fmt.Errorf("core image of thread %d: %w", t.Tid, err)
	}
	return criuimage.EncodeCore(out), nil
}

func setGPRegs(g *corex86.UserX86RegsEntry, t Thread) {
	r := t.Regs
	for _, f := range []struct {
		dst **uint64
		v   uint64
	}{
		{&g.R15, r.R15}, {&g.R14, r.R14}, {&g.R13, r.R13}, {&g.R12, r.R12}, {&g.Bp, r.Rbp}, {&g.Bx, r.Rbx},
		{&g.R11, r.R11}, {&g.R10, r.R10}, {&g.R9, r.R9}, {&g.R8, r.R8}, {&g.Ax, r.Rax}, {&g.Cx, r.Rcx},
		{&g.Dx, r.Rdx}, {&g.Si, r.Rsi}, {&g.Di, r.Rdi}, {&g.OrigAx, r.Orig_rax}, {&g.Ip, r.Rip},
		{&g.Cs, r.Cs}, {&g.Flags, r.Eflags}, {&g.Sp, r.Rsp}, {&g.Ss, r.Ss}, {&g.FsBase, r.Fs_base},
		{&g.GsBase, r.Gs_base}, {&g.Ds, r.Ds}, {&g.Es, r.Es}, {&g.Fs, r.Fs}, {&g.Gs, r.Gs},
	} {
		*f.dst = proto.Uint64(f.v)
	}
}

// setFPRegs fills the FPU registers from the XSAVE area: the legacy FXSAVE
// region (its layout is fixed), the header's xstate_bv, and each extended
// component the entry already carries.
func setFPRegs(fp *corex86.UserX86FpregsEntry, area []byte, layout xstateLayout) error {
	if len(area) < xstateHeaderStart+8 {
		return fmt.Errorf("extended state of %d bytes, too short", len(area))
	}
	le := binary.LittleEndian
	fp.Cwd = proto.Uint32(uint32(le.Uint16(area[0:])))
	fp.Swd = proto.Uint32(uint32(le.Uint16(area[2:])))
	fp.Twd = proto.Uint32(uint32(le.Uint16(area[4:])))
	fp.Fop = proto.Uint32(uint32(le.Uint16(area[6:])))
	fp.Rip = proto.Uint64(le.Uint64(area[8:]))
	fp.Rdp = proto.Uint64(le.Uint64(area[16:]))
	fp.Mxcsr = proto.Uint32(le.Uint32(area[24:]))
	fp.MxcsrMask = proto.Uint32(le.Uint32(area[28:]))
	if len(fp.StSpace) != 32 || len(fp.XmmSpace) != 64 {
		return errors.New("FPU entry without the legacy register arrays")
	}
	words32(fp.StSpace, area[32:160])
	words32(fp.XmmSpace, area[160:416])
	x := fp.GetXsave()
	if x == nil {
		return nil
	}
	x.XstateBv = proto.Uint64(le.Uint64(area[xstateHeaderStart:]))
	for _, c := range []struct {
		feature int
		w32     []uint32
		w64     []uint64
	}{
		{featureYMM, x.YmmhSpace, nil}, {featureBNDREGS, nil, x.BndregState}, {featureBNDCSR, nil, x.BndcsrState},
		{featureOpmask, nil, x.OpmaskReg}, {featureZMMHi256, nil, x.ZmmUpper}, {featureHi16ZMM, nil, x.Hi16Zmm},
		{featurePKRU, x.Pkru, nil},
	} {
		if len(c.w32) == 0 && len(c.w64) == 0 {
			continue // not in the image: CRIU's CPU had no such component
		}
		src := layout.component(area, c.feature)
		if len(src) != 4*len(c.w32)+8*len(c.w64) {
			return fmt.Errorf("extended state component %d: %d bytes here, %d in the image", c.feature, len(src), 4*len(c.w32)+8*len(c.w64))
		}
		words32(c.w32, src)
		words64(c.w64, src)
	}
	return nil
}

func words32(dst []uint32, src []byte) {
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint32(src[4*i:])
	}
}

func words64(dst []uint64, src []byte) {
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint64(src[8*i:])
	}
}
