// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/test/prereq"
)

// TestPipesMatchCRIU: a program holds a pipe with 3,000 bytes nobody read;
// frozen, every pipe read end it has is copied without taking the bytes,
// and the pipes-data image equals CRIU's dump of the same frozen state,
// byte for byte; the bytes are still in the pipe afterwards.
func TestPipesMatchCRIU(t *testing.T) {
	prereq.Root(t, "pidfd_getfd, cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, _ := startWorkload(t, cg, "-pipe", "3000")
	pid := cmd.Process.Pid

	setFreezer(t, cg, "FROZEN")
	pipes := capturePipes(t, pid)
	dir := filepath.Join(t.TempDir(), "criu")
	criuDump(t, pid, dir, "--freeze-cgroup", cg)
	again := capturePipes(t, pid)
	setFreezer(t, cg, "THAWED")

	if len(pipes) != 1 || len(pipes[0].Data) != 3000 {
		t.Fatalf("pipes captured: %d, want one with 3000 bytes", len(pipes))
	}
	got, err := PipesDataImage(pipes)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustRead(t, filepath.Join(dir, "pipes-data.img")); !bytes.Equal(got, want) {
		t.Errorf("pipes-data image of %d bytes differs from CRIU's of %d", len(got), len(want))
	}
	if len(again) != 1 || !bytes.Equal(again[0].Data, pipes[0].Data) {
		t.Errorf("the pipe's bytes were taken by the capture")
	}
}

// capturePipes captures every pipe read end of pid, in descriptor order,
// each pipe once.
func capturePipes(t *testing.T, pid int) []PipeData {
	t.Helper()
	ds, err := OpenDescriptors(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDescriptors(ds)
	var out []PipeData
	seen := map[uint32]bool{}
	for _, d := range ds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, d.FD))
		if !strings.HasPrefix(link, "pipe:") {
			continue
		}
		fl, err := unix.FcntlInt(uintptr(d.Dup), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_ACCMODE == unix.O_WRONLY {
			continue // CRIU dumps a pipe's bytes from its read end
		}
		p, err := CapturePipe(d.Dup)
		if err != nil {
			t.Fatal(err)
		}
		if !seen[p.ID] {
			seen[p.ID] = true
			out = append(out, p)
		}
	}
	return out
}
