// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// The extended-state components CRIU's core image carries, by XSAVE feature
// number (the kernel's XFEATURE_*).
const (
	featureYMM      = 2
	featureBNDREGS  = 3
	featureBNDCSR   = 4
	featureOpmask   = 5
	featureZMMHi256 = 6
	featureHi16ZMM  = 7
	featurePKRU     = 9
)

// xstateLayout is where each component sits in the standard (non-compacted)
// XSAVE area that PTRACE_GETREGSET(NT_X86_XSTATE) returns, as CPUID leaf 0xD
// says on this CPU; CRIU reads the same offsets.
type xstateLayout struct {
	offset, size [featurePKRU + 1]uint32
}

func readXstateLayout() xstateLayout {
	var l xstateLayout
	if max, _, _, _ := cpuid(0, 0); max < 0xd {
		return l
	}
	for f := featureYMM; f <= featurePKRU; f++ {
		size, off, _, _ := cpuid(0xd, uint32(f))
		l.offset[f], l.size[f] = off, size
	}
	return l
}

// component returns the bytes of feature f in the area, or nil if the CPU
// has no such component or the area is too short for it.
func (l xstateLayout) component(area []byte, f int) []byte {
	off, size := l.offset[f], l.size[f]
	if size == 0 || int(off)+int(size) > len(area) {
		return nil
	}
	return area[off : off+size]
}
