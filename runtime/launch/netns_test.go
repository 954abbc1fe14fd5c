// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package launch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/iorrc/rrc/test/netnstest"
)

// TestInNetns: fn sees the namespace at path, the caller's thread and
// namespace are untouched, and a missing namespace is an error naming it.
func TestInNetns(t *testing.T) {
	path := netnstest.Scratch(t)
	own, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := InNetns(path, func() (err error) { inside, err = os.Readlink("/proc/thread-self/ns/net"); return }); err != nil {
		t.Fatal(err)
	}
	if inside == own {
		t.Fatalf("fn ran in the caller's namespace %s", own)
	}
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != own {
		t.Fatalf("the caller's thread is in %s after, was in %s", now, own)
	}
	if err := InNetns(filepath.Join(t.TempDir(), "missing"), func() error { return nil }); err == nil {
		t.Fatal("a missing namespace accepted")
	}
}
