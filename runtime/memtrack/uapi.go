// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel interfaces that golang.org/x/sys does not define (include/uapi/
// linux/userfaultfd.h and fs.h). The ioctl numbers are _IOWR values, the same
// on every architecture that uses the generic encoding.
const (
	uffdAPI = 0xAA
	// _IOWR(0xAA, 0x3F, struct uffdio_api): 24 bytes.
	uffdioAPI = 0xc018aa3f
	// _IOWR(0xAA, 0x00, struct uffdio_register): 32 bytes.
	uffdioRegister = 0xc020aa00

	uffdioRegisterModeWP = 2

	uffdFeatureWPUnpopulated = 1 << 13
	uffdFeatureWPAsync       = 1 << 15

	// userfaultfd(2) flag: handle user-mode faults only (no privilege
	// needed).
	uffdUserModeOnly = 1

	// _IOWR('f', 16, struct pm_scan_arg): 96 bytes.
	pagemapScan = 0xc0606610

	pmScanWPMatching   = 1 << 0
	pmScanCheckWPAsync = 1 << 1

	pageIsWPAllowed = 1 << 0
	pageIsWritten   = 1 << 1
	pageIsFile      = 1 << 2
	pageIsPresent   = 1 << 3
	pageIsSwapped   = 1 << 4
	pageIsPFNZero   = 1 << 5
	pageIsHuge      = 1 << 6

	// scanEnd is the end of the x86_64 user address space (TASK_SIZE).
	scanEnd = 0x7ffffffff000
)

// uffdioAPIArg is struct uffdio_api.
type uffdioAPIArg struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// uffdioRegisterArg is struct uffdio_register.
type uffdioRegisterArg struct {
	Start  uint64
	Len    uint64
	Mode   uint64
	Ioctls uint64
}

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

// pageRegion is struct page_region.
type pageRegion struct {
	Start      uint64
	End        uint64
	Categories uint64
}

// ioctlPtr issues an ioctl whose argument is a pointer to p.
func ioctlPtr(fd uintptr, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// pagemapScanAny reports whether [start, end) has at least one page that q
// selects, with one PAGEMAP_SCAN call that stops at the first page.
func pagemapScanAny(fd uintptr, start, end uint64, q scanQuery) (bool, error) {
	var r pageRegion
	arg := pmScanArg{
		Size:              uint64(unsafe.Sizeof(pmScanArg{})),
		Flags:             q.flags,
		Start:             start,
		End:               end,
		Vec:               uint64(uintptr(unsafe.Pointer(&r))),
		VecLen:            1,
		MaxPages:          1,
		CategoryInverted:  q.inverted,
		CategoryMask:      q.mask,
		CategoryAnyofMask: q.anyof,
		ReturnMask:        q.ret,
	}
	n, err := ioctlPtr(fd, pagemapScan, unsafe.Pointer(&arg))
	runtime.KeepAlive(&r)
	return n > 0, err
}

// scanQuery selects pages for pagemapScanAll.
type scanQuery struct {
	flags, inverted, mask, anyof, ret uint64
}

// pagemapScanAll runs PAGEMAP_SCAN over [start, end) on the pagemap file fd,
// calling the ioctl again from walk_end until the whole range is walked
// (the kernel stops early when buf is full), and passes each region to fn
// until fn returns false. Adjacent regions with the same categories are
// merged across calls.
func pagemapScanAll(fd uintptr, start, end uint64, q scanQuery, buf []pageRegion, fn func(pageRegion) bool) error {
	var pending pageRegion
	have := false
	for start < end {
		arg := pmScanArg{
			Size:              uint64(unsafe.Sizeof(pmScanArg{})),
			Flags:             q.flags,
			Start:             start,
			End:               end,
			Vec:               uint64(uintptr(unsafe.Pointer(&buf[0]))),
			VecLen:            uint64(len(buf)),
			CategoryInverted:  q.inverted,
			CategoryMask:      q.mask,
			CategoryAnyofMask: q.anyof,
			ReturnMask:        q.ret,
		}
		n, err := ioctlPtr(fd, pagemapScan, unsafe.Pointer(&arg))
		runtime.KeepAlive(buf)
		if err != nil {
			return err
		}
		for _, r := range buf[:n] {
			if have && pending.End == r.Start && pending.Categories == r.Categories {
				pending.End = r.End
				continue
			}
			if have && !fn(pending) {
				return nil
			}
			pending, have = r, true
		}
		if arg.WalkEnd <= start {
			// Cannot happen (the kernel always makes progress or fails);
			// guard against looping forever.
			break
		}
		start = arg.WalkEnd
	}
	if have {
		fn(pending)
	}
	return nil
}
