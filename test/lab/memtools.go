// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// MemoryTools builds what incremental memory dumps need from this tree: the
// criu-written library (contrib/criu-written, with gcc) and the rrc-uffd
// helper (cmd/rrc-uffd), into a temporary directory of t; it returns their
// paths. Tests use these rather than the installed ones, so that they
// exercise the sources next to them.
func MemoryTools(t testing.TB) (preload, helper string) {
	t.Helper()
	root := filepath.Join(filepath.Dir(ScriptPath()), "..", "..")
	dir := t.TempDir()
	preload, helper = filepath.Join(dir, "criu-written.so"), filepath.Join(dir, "rrc-uffd")
	build := exec.Command("go", "build", "-o", helper, "./cmd/rrc-uffd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build rrc-uffd: %v\n%s", err, out)
	}
	src := filepath.Join(root, "contrib", "criu-written", "criu-written.c")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
		"-o", preload, src, "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("build criu-written.so (gcc is installed by make setup): %v\n%s", err, out)
	}
	return preload, helper
}
