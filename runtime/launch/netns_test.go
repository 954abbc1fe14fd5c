// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package launch

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/iorrc/rrc/test/prereq"
)

// TestInNetns: fn sees the namespace at path, the caller's thread and
// namespace are untouched, and a missing namespace is an error naming it.
func TestInNetns(t *testing.T) {
	prereq.Root(t, "network namespaces")
	prereq.Commands(t, "unshare", "umount")
	path := filepath.Join(t.TempDir(), "ns")
	if out, err := exec.Command("sh", "-c", "touch "+path+" && unshare --net="+path+" true").CombinedOutput(); err != nil {
		t.Fatalf("make a namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", path).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", path, err, out)
		}
	})
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
