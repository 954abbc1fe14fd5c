// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/runtime/memtrack"
)

// Incremental memory dumps. Without soft-dirty bits (CONFIG_MEM_SOFT_DIRTY
// off on this project's machines) CRIU copies all of the container's memory
// inside every pause, which then grows with the container's memory
// (docs/CHECKPOINT.md has the figures). The kernel's userfaultfd
// write-protect in asynchronous mode tells the same thing soft-dirty would:
// which pages were written since they were last protected. So:
//
//   - memtrack registers the private memory of each process of the
//     container with a userfaultfd (made inside the process by the rrc-uffd
//     helper, kept by us) and write-protects what was written right after
//     every dump, while the container is still frozen;
//   - CRIU runs with --track-mem and the previous dump as its parent, with
//     the criu-written library preloaded, which makes CRIU read "written
//     since protected" where it reads soft-dirty: it copies only those pages
//     and records the others as holes found in the parent;
//   - after the thaw, criuimage.MergeParent fills the holes from the parent,
//     so every checkpoint directory handed out is a full image as before
//     (the backup and the restore are unchanged), and that full image is
//     kept, hard-linked, as the next dump's parent.
//
// Safe by construction: a page is left to the parent only if the kernel says
// it sits in write-tracked memory and was not written since the protection
// that followed the parent's dump. Anything not tracked (a process that
// could not be attached, a mapping made since the last registration, shared
// memory) is dumped in full. Whenever the chain is in doubt (a failed merge, a new
// Checkpointer), the next dump has no parent.

// MemoryTracking turns on incremental memory dumps.
type MemoryTracking struct {
	// Preload is the criu-written library (contrib/criu-written), preloaded
	// into CRIU.
	Preload string
	// Helper is the command that makes a userfaultfd inside a process and
	// hands it over (cmd/rrc-uffd, default ["rrc-uffd"]); the pid is added.
	Helper []string
	// KernelCache, if set, is a file on a tmpfs where the library keeps
	// CRIU's kernel-feature cache for this Checkpointer's dumps (CRIU's own,
	// /run/criu.kdat, is never used with the library). Without it each dump
	// probes the kernel again during its start-up.
	KernelCache string
}

// memState is a Checkpointer's memory tracking. One goroutine at a time
// uses it: the Checkpointer's, or the refresh it starts after a checkpoint
// and waits for before the next.
type memState struct {
	cfg      MemoryTracking
	trackers map[int]*memtrack.Tracker
	refused  map[int]int // pids that could not be tracked: failed attempts
	base     string      // full image set of the last dump: the next parent
	seq      int
	spare    *mergeSpare
}

// attachAttempts is how many refreshes try to track a process before it is
// given up on (dumped in full from then on).
const attachAttempts = 3

// startMemoryTracking checks that CRIU accepts --track-mem with the
// preloaded library and attaches to the container's processes. It returns
// nil, logged, when incremental dumps cannot work here: every dump is then
// full, as without tracking.
func (c *Checkpointer) startMemoryTracking(ctx context.Context) *memState {
	if c.cfg.Memory == nil {
		return nil
	}
	m := *c.cfg.Memory
	if len(m.Helper) == 0 {
		m.Helper = []string{"rrc-uffd"}
	}
	if err := checkPreload(ctx, c.cfg.CRIU, m.Preload); err != nil {
		c.log.Warn("incremental memory dumps off: every dump copies all memory", "err", err)
		return nil
	}
	ms := &memState{cfg: m, trackers: map[int]*memtrack.Tracker{}, refused: map[int]int{}, spare: newMergeSpare()}
	c.refreshTracking(ctx, ms)
	return ms
}

// checkPreload asks CRIU, with the library preloaded, whether it can track
// memory.
func checkPreload(ctx context.Context, cmd CRIUCommand, preload string) error {
	if preload == "" {
		return errors.New("no criu-written library configured")
	}
	if _, err := os.Stat(preload); err != nil {
		return fmt.Errorf("criu-written library: %w", err)
	}
	argv := cmd.Argv
	if len(argv) == 0 {
		argv = []string{"criu"}
	}
	c := exec.CommandContext(ctx, argv[0], append(argv[1:], "check", "--feature", "mem_dirty_track")...)
	c.Env = append(os.Environ(), "LD_PRELOAD="+preload)
	if _, err := launch.Output(cmd.launcher(), c); err != nil {
		return fmt.Errorf("with %s preloaded: %w", preload, err)
	}
	return nil
}

// refreshTracking attaches to processes of the container not tracked yet and
// registers the mappings that appeared in the tracked ones. Outside the
// pause; a process that cannot be tracked is dumped in full.
func (c *Checkpointer) refreshTracking(ctx context.Context, m *memState) {
	pids, err := cgroupProcs(c.freezer.Dir)
	if err != nil {
		c.log.Warn("memory tracking: listing the container's processes", "err", err)
		return
	}
	live := map[int]bool{}
	for _, pid := range pids {
		live[pid] = true
		if t, ok := m.trackers[pid]; ok {
			if _, err := t.Register(); err != nil {
				if !errors.Is(err, memtrack.ErrProcessChanged) {
					c.log.Warn("memory tracking: registering new mappings", "pid", pid, "err", err)
				}
				t.Close()
				delete(m.trackers, pid)
			}
			continue
		}
		if m.refused[pid] >= attachAttempts {
			continue
		}
		t, err := c.attach(ctx, m, pid)
		if err != nil {
			m.refused[pid]++
			if errors.Is(err, memtrack.ErrSeccomp) {
				m.refused[pid] = attachAttempts // it will not change
			}
			if m.refused[pid] < attachAttempts {
				c.log.Info("memory tracking: process not tracked yet, its memory is dumped in full; trying again after the next checkpoint", "pid", pid, "err", err)
			} else {
				c.log.Warn("memory tracking: process not tracked, its memory is dumped in full every epoch", "pid", pid, "err", err)
			}
			continue
		}
		delete(m.refused, pid)
		m.trackers[pid] = t
	}
	for pid, t := range m.trackers {
		if !live[pid] {
			t.Close()
			delete(m.trackers, pid)
		}
	}
	for pid := range m.refused {
		if !live[pid] {
			delete(m.refused, pid)
		}
	}
}

func (c *Checkpointer) attach(ctx context.Context, m *memState, pid int) (*memtrack.Tracker, error) {
	t0 := time.Now()
	uffd, err := memtrack.Take(ctx, m.cfg.Helper, c.cfg.CRIU.launcher(), pid)
	if err != nil {
		return nil, err
	}
	t, err := memtrack.Attach(pid, uffd)
	if err != nil {
		uffd.Close()
		return nil, err
	}
	c.log.Info("memory tracking: process attached", "pid", pid, "took", time.Since(t0))
	return t, nil
}

// cgroupProcs lists the processes of a cgroup directory.
func cgroupProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup.procs of %s: %q is no pid", dir, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// reset write-protects what the container wrote since the last dump. Called
// while frozen, right after a successful dump. A partial reset is still
// safe: a page left unprotected counts as written.
func (m *memState) reset(log *slog.Logger) {
	for pid, t := range m.trackers {
		if _, err := t.Reset(); err != nil {
			log.Warn("memory tracking: write-protecting after the dump", "pid", pid, "err", err)
		}
	}
}

// rebase turns the dump into dir into a full image (if it had a parent) and
// keeps it as the next dump's parent. On error the chain is cut: the next
// dump is full, and dir is not a checkpoint to use.
func (m *memState) rebase(dir string, hadParent bool, log *slog.Logger) (criuimage.MergeStats, error) {
	var st criuimage.MergeStats
	old := m.base
	m.base = ""
	defer func() {
		if old != "" {
			os.RemoveAll(old)
		}
	}()
	if hadParent {
		var err error
		if st, err = criuimage.MergeParentReusing(dir, old, m.spare.take()); err != nil {
			return st, fmt.Errorf("merging the incremental dump with its parent: %w", err)
		}
	}
	os.Remove(filepath.Join(dir, "parent")) // CRIU's link to the parent, if any
	m.seq++
	base := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".memory-base-%d", m.seq))
	if err := linkImages(dir, base); err != nil {
		os.RemoveAll(base)
		return st, fmt.Errorf("keeping the dump as the next parent: %w", err)
	}
	m.base = base
	m.spare.fill(filepath.Dir(dir), largestPages(dir), log)
	return st, nil
}

// linkImages hard-links the CRIU images (*.img) of dir into a new directory
// to: what CRIU reads of a parent. Nothing rewrites an image in place (a
// merge writes new files), so the links stay what this dump wrote.
func linkImages(dir, to string) error {
	if err := os.Mkdir(to, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".img") {
			continue
		}
		if err := os.Link(filepath.Join(dir, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// close ends the tracking and removes the kept parent.
func (m *memState) close() {
	if m == nil {
		return
	}
	for pid, t := range m.trackers {
		t.Close()
		delete(m.trackers, pid)
	}
	if m.base != "" {
		os.RemoveAll(m.base)
		m.base = ""
	}
	m.spare.close()
}

// parent is the image set the next dump is incremental over: "" for a full
// dump (no tracking, nothing tracked, or no valid parent).
func (m *memState) parent() string {
	if m == nil || len(m.trackers) == 0 {
		return ""
	}
	return m.base
}
