// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package netnstest makes scratch network namespaces for tests.
package netnstest

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/iorrc/rrc/test/prereq"
)

// Scratch makes a new network namespace bound at a file in the test's
// temporary directory and returns its path; it is unmounted at cleanup.
// It needs root (prereq).
func Scratch(t testing.TB) string {
	t.Helper()
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
	return path
}
