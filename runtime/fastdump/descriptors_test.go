// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/test/prereq"
)

// TestOpenDescriptors duplicates this process's own descriptors: a pipe it
// opened is among them, in order, and its duplicate is the same pipe.
func TestOpenDescriptors(t *testing.T) {
	prereq.Root(t, "pidfd_getfd")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	ds, err := OpenDescriptors(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDescriptors(ds)
	var want unix.Stat_t
	if err := unix.Fstat(int(r.Fd()), &want); err != nil {
		t.Fatal(err)
	}
	found := false
	for i, d := range ds {
		if i > 0 && ds[i-1].FD >= d.FD {
			t.Errorf("descriptors out of order: %d after %d", d.FD, ds[i-1].FD)
		}
		if d.FD != int(r.Fd()) {
			continue
		}
		var got unix.Stat_t
		if err := unix.Fstat(d.Dup, &got); err != nil {
			t.Fatal(err)
		}
		found = got.Ino == want.Ino && d.Dup != d.FD
	}
	if !found {
		t.Errorf("the pipe's read end %d is not among %d descriptors, duplicated", r.Fd(), len(ds))
	}
}
