// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// Descriptor is one of a process's open descriptors and this process's
// duplicate of it (pidfd_getfd): the same open file, its state read and its
// socket repaired from here.
type Descriptor struct {
	FD  int // the number in the process
	Dup int // the duplicate in this process
}

// OpenDescriptors duplicates every open descriptor of pid, in descriptor
// order. Close the duplicates with CloseDescriptors.
func OpenDescriptors(pid int) ([]Descriptor, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("descriptors of %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("descriptors of %d: %w", pid, err)
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			return nil, fmt.Errorf("descriptors of %d: entry %q", pid, e.Name())
		}
		fds = append(fds, n)
	}
	sort.Ints(fds)
	out := make([]Descriptor, 0, len(fds))
	for _, n := range fds {
		dup, err := unix.PidfdGetfd(pidfd, n, 0)
		if errors.Is(err, unix.EBADF) {
			continue // closed since the listing (the process was running)
		}
		if err != nil {
			CloseDescriptors(out)
			return nil, fmt.Errorf("descriptor %d of %d: %w", n, pid, err)
		}
		out = append(out, Descriptor{FD: n, Dup: dup})
	}
	return out, nil
}

// CloseDescriptors closes the duplicates.
func CloseDescriptors(ds []Descriptor) {
	for _, d := range ds {
		unix.Close(d.Dup)
	}
}
