// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
)

// CheckpointerConfig says which container to checkpoint and how.
type CheckpointerConfig struct {
	// RuncRoot is runc's --root for the container, e.g.
	// /run/containerd/runc/<containerd namespace> for containerd's runc shim.
	RuncRoot string
	// ID is the container id.
	ID string
	// CRIU says how to start CRIU service processes.
	CRIU CRIUCommand
	// Dump holds CRIU knobs; ImagesDir is set per checkpoint.
	Dump DumpOptions
	// CaptureRootfsDiff writes the overlay upper directory (the writable
	// layer) as rootfs-diff.tar into each checkpoint, while frozen.
	CaptureRootfsDiff bool
	// PrepareNext asks CRIU for the next dump right after each checkpoint
	// (see prepare.go), so that CRIU's start-up is over when the next
	// checkpoint is wanted: a checkpoint then takes about its pause.
	PrepareNext bool
	// Memory, if set, makes every dump after the first copy only the memory
	// written since the one before (incremental.go); the checkpoints handed
	// out are full images all the same.
	Memory *MemoryTracking
	Log    *slog.Logger
}

// CheckpointStats describes one checkpoint. Pause is how long the container
// was frozen: from the freeze request to the thaw, = Freeze + Dump + Thaw
// (+ a few µs of bookkeeping); RootfsDiff runs alongside Dump and adds to
// the pause only if it takes longer.
type CheckpointStats struct {
	// Wait is the call → CRIU ready to freeze: its start-up when the
	// prepared dump was not ready (or none was prepared), else ≈0.
	Wait       time.Duration
	Freeze     time.Duration // freeze request → kernel reports FROZEN
	Dump       time.Duration // CRIU dump request → response
	RootfsDiff time.Duration // writable layer and tmpfs archives, while frozen, alongside the dump
	Thaw       time.Duration // thaw request
	Pause      time.Duration
	ImageBytes int64 // bytes in the image directory (CRIU images + rootfs diff)
	DiffBytes  int64 // of which the writable layer and tmpfs archives
	// CRIU's own figures (stats-dump), if readable.
	CRIUFrozen  time.Duration // CRIU: tasks seized → released
	CRIUMemdump time.Duration
	CRIUPages   uint64 // pages written
	// Incremental dumps (CheckpointerConfig.Memory): pages CRIU left in the
	// parent image, and filling them in after the thaw.
	ParentPages uint64
	Merge       time.Duration
}

// CheckpointHooks are called by CheckpointWithHooks at the freeze and the
// thaw, on the goroutine of the call; each must be quick (it runs inside the
// pause or just before it). Nil hooks are skipped.
//
//   - BeforeFreeze: CRIU has finished its start-up and is about to seize
//     the tasks ("pre-dump", or FreezeNotifyScript with the criu-written
//     library); the container is still running and is frozen right after
//     the hook returns. E.g. begin holding the container's input.
//   - Frozen: the cgroup reports FROZEN; nothing has been dumped yet. No
//     output of the container can be produced until Thawed. E.g. seal the
//     output gate's epoch.
//   - Thawed: the container runs again (or the thaw was attempted and
//     failed; the checkpoint's error says so). E.g. release held input.
//
// Guarantees: Frozen and Thawed are only called after BeforeFreeze; if
// BeforeFreeze was called, Thawed is called exactly once before
// CheckpointWithHooks returns, also when the freeze, CRIU, the file capture
// or the thaw fail (a failed freeze is undone by the Freezer first). If
// CRIU fails before that notification no hook is called. Frozen
// is called at most once and only after a successful freeze.
type CheckpointHooks struct {
	BeforeFreeze func()
	Frozen       func()
	Thawed       func()
}

func callHook(f func()) {
	if f != nil {
		f()
	}
}

// Checkpointer checkpoints one running runc container again and again with
// a short pause: we freeze its cgroup with fine-grained polling, CRIU dumps
// the already frozen tasks with --leave-running from a pre-started service
// process, and we thaw. Not safe for concurrent Checkpoint calls (one epoch
// at a time).
type Checkpointer struct {
	cfg     CheckpointerConfig
	log     *slog.Logger
	state   *RuncState
	freezer *Freezer
	criu    *CRIUService
	upper   string       // overlay upperdir, "" unless CaptureRootfsDiff
	tmpfs   []TmpfsMount // carried by us when Dump.ExternalTmpfs
	next    nextDump     // with PrepareNext
	mem     *memState    // with Memory, if incremental dumps work here
	// refreshed is closed when the tracking's refresh after the last
	// checkpoint is over (nil: none started).
	refreshed chan struct{}
	// sysv watches the IPC namespace CRIU shares with the container (and
	// does not dump) for System V objects; ipcToDump says one was found.
	sysv      *sysvIPC
	ipcToDump bool
}

// NewCheckpointer reads the container's runc state and starts a CRIU service
// process. Close it to end that process.
func NewCheckpointer(ctx context.Context, cfg CheckpointerConfig) (*Checkpointer, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	st, err := ReadRuncState(cfg.RuncRoot, cfg.ID)
	if err != nil {
		return nil, err
	}
	dir, v2 := st.FreezerPath()
	if dir == "" {
		return nil, fmt.Errorf("checkpointer for %s: no freezer cgroup in runc state", cfg.ID)
	}
	if cfg.CRIU.NetNS != "" {
		// CRIU must be in the container's own namespace, or the container's
		// network state would be neither dumped nor where the restore puts it.
		if err := sameNS(cfg.CRIU.NetNS, fmt.Sprintf("/proc/%d/ns/net", st.InitPid)); err != nil {
			return nil, fmt.Errorf("checkpointer for %s: CRIU's network namespace: %w", cfg.ID, err)
		}
		cfg.Dump.InNetNS = true
	}
	c := &Checkpointer{cfg: cfg, log: log.With("container", cfg.ID), state: st, freezer: &Freezer{Dir: dir, V2: v2}}
	if cfg.CaptureRootfsDiff {
		if c.upper, err = OverlayUpperdir(st.Config.Rootfs); err != nil {
			return nil, fmt.Errorf("checkpointer for %s: %w", cfg.ID, err)
		}
	}
	if cfg.Dump.ExternalTmpfs {
		c.tmpfs = TmpfsMounts(st, procRootStat(st.InitPid))
	}
	c.shareUTSIPC()
	if c.mem = c.startMemoryTracking(ctx); c.mem != nil {
		c.cfg.CRIU.Env = append(c.cfg.CRIU.Env, "LD_PRELOAD="+c.mem.cfg.Preload)
		if c.mem.cfg.KernelCache != "" {
			c.cfg.CRIU.Env = append(c.cfg.CRIU.Env, kernelCacheVar+"="+c.mem.cfg.KernelCache)
		}
		c.cfg.CRIU.FreezeNotify = true
		c.cfg.Dump.TrackMem = true
	}
	if c.criu, err = NewCRIUService(c.cfg.CRIU, c.log); err != nil {
		c.mem.close()
		c.sysv.close()
		return nil, fmt.Errorf("checkpointer for %s: %w", cfg.ID, err)
	}
	return c, nil
}

// State returns the runc state the checkpointer works from.
func (c *Checkpointer) State() *RuncState { return c.state }

// Checkpoint writes a checkpoint of the running container into dir (created;
// should be on tmpfs), which `runc restore --image-path dir` can restore.
// The container keeps running.
func (c *Checkpointer) Checkpoint(ctx context.Context, dir string) (CheckpointStats, error) {
	return c.CheckpointWithHooks(ctx, dir, CheckpointHooks{})
}

// CheckpointWithHooks is Checkpoint, calling hooks at the freeze and the
// thaw (see CheckpointHooks).
func (c *Checkpointer) CheckpointWithHooks(ctx context.Context, dir string, hooks CheckpointHooks) (CheckpointStats, error) {
	if c.ipcToDump { // the switch failed last time
		if err := c.dumpIPCNamespace(); err != nil {
			return CheckpointStats{}, fmt.Errorf("checkpoint %s: %w", c.cfg.ID, err)
		}
	}
	called := time.Now()
	c.waitRefresh()
	parent := c.mem.parent()
	dump := c.takePrepared(dir, parent)
	if dump == nil {
		var err error
		if dump, err = c.prepare(ctx, dir, parent); err != nil {
			return CheckpointStats{}, fmt.Errorf("checkpoint %s: %w", c.cfg.ID, err)
		}
	}
	// Whatever happens to this one, the next is asked for once it is over,
	// with the parent this one leaves.
	nextParent := parent
	defer func() { c.prepareNext(filepath.Dir(dir), nextParent) }()

	p := &pause{c: c, ctx: ctx, dir: dir, hooks: hooks, freezeAt: "pre-dump", called: called}
	if c.cfg.CRIU.FreezeNotify {
		p.freezeAt = FreezeNotifyScript
	}
	defer p.thaw()
	_, dumpErr := dump.Run(ctx, p.onNotify, p.onDumped)
	p.thaw()
	var mergeErr error
	if p.reset {
		// Protected since this dump: it is the next parent, merged or none.
		t := time.Now()
		_, mergeErr = c.mem.rebase(dir, parent != "", c.log)
		p.st.Merge = time.Since(t)
	}
	if c.mem != nil {
		nextParent = c.mem.parent()
		// New mappings and processes: off the way to the send, before the
		// next checkpoint (which waits for it).
		done := make(chan struct{})
		c.refreshed = done
		go func() {
			defer close(done)
			c.refreshTracking(context.WithoutCancel(ctx), c.mem)
		}()
	}
	if err := p.err(dumpErr, mergeErr); err != nil {
		return p.st, fmt.Errorf("checkpoint %s: %w", c.cfg.ID, err)
	}
	c.readCRIUStats(dir, &p.st)
	var err error
	if p.st.ImageBytes, err = dirSize(dir); err != nil {
		return p.st, fmt.Errorf("checkpoint %s: size of images: %w", c.cfg.ID, err)
	}
	st := p.st
	c.log.Debug("checkpoint", "dir", dir, "pause", st.Pause, "freeze", st.Freeze, "dump", st.Dump,
		"rootfs_diff", st.RootfsDiff, "thaw", st.Thaw, "bytes", st.ImageBytes)
	return st, nil
}

// filesResult is what captureFiles did, and how long it took.
type filesResult struct {
	bytes int64
	err   error
	took  time.Duration
}

// captureFiles archives, while frozen, what CRIU was told to leave alone:
// the writable layer and the tmpfs mounts. It returns the bytes written.
func (c *Checkpointer) captureFiles(dir string) (int64, error) {
	var total int64
	if c.upper != "" {
		n, err := WriteRootfsDiff(filepath.Join(dir, RootfsDiffFile), c.upper)
		if err != nil {
			return total, err
		}
		total += n
	}
	if len(c.tmpfs) > 0 {
		n, err := captureTmpfs(dir, c.state.InitPid, c.tmpfs)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (c *Checkpointer) readCRIUStats(dir string, st *CheckpointStats) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	defer d.Close()
	ds, err := stats.CriuGetDumpStats(d)
	if err != nil {
		c.log.Debug("read criu dump stats", "err", err)
		return
	}
	st.CRIUFrozen = time.Duration(ds.GetFrozenTime()) * time.Microsecond
	st.CRIUMemdump = time.Duration(ds.GetMemdumpTime()) * time.Microsecond
	st.CRIUPages = ds.GetPagesWritten()
	st.ParentPages = ds.GetPagesSkippedParent()
}

// Close ends the CRIU service process and a prepared dump.
func (c *Checkpointer) Close() error {
	c.dropPrepared()
	err := c.criu.Close()
	c.waitRefresh()
	c.mem.close()
	c.sysv.close()
	return err
}

// waitRefresh waits for the tracking's refresh after the last checkpoint.
func (c *Checkpointer) waitRefresh() {
	if c.refreshed != nil {
		<-c.refreshed
		c.refreshed = nil
	}
}

func writeDescriptors(dir string, fds []string) error {
	b, err := json.Marshal(fds)
	if err != nil {
		return fmt.Errorf("encode %s: %w", descriptorsFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, descriptorsFile), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", descriptorsFile, err)
	}
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// readDumpStats returns CRIU's pause from its stats-dump: the time it took
// to freeze plus the time the tasks stayed frozen.
func readDumpStats(dir *os.File) (time.Duration, error) {
	ds, err := stats.CriuGetDumpStats(dir)
	if err != nil {
		return 0, err
	}
	return time.Duration(ds.GetFreezingTime()+ds.GetFrozenTime()) * time.Microsecond, nil
}

// criuLogErrors returns up to max of the error lines of a CRIU log, without
// the ones CRIU also prints when all goes well (the RLIMIT_NOFILE warning
// of an unprivileged-looking environment), joined by " | ".
func criuLogErrors(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "log unreadable: " + err.Error()
	}
	var errs []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "Error (") || strings.Contains(line, "RLIMIT_NOFILE") {
			continue
		}
		if len(errs) == max {
			errs = append(errs, "...")
			break
		}
		errs = append(errs, strings.TrimSpace(line))
	}
	if len(errs) == 0 {
		return "no error lines in the log"
	}
	return strings.Join(errs, " | ")
}
