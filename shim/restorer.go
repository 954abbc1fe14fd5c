// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/runtime/launch"
)

// RuncRestorer restores a checkpoint with runc restore (TCP repair) into a
// bundle it prepares on the backup:
//
//   - config.json: the backup's own OCI spec of the container (Spec), which
//     names the backup's standby service network namespace, with root.path
//     set to the bundle's rootfs and linux.cgroupsPath to CgroupsPath;
//   - rootfs: a fresh overlay over the image's layers as the backup holds
//     them (Lower, from the backup's containerd snapshot of the same image)
//     with the checkpoint's writable layer (rootfs-diff.tar) as upper dir.
//
// The backup never needs the primary's bundle: the image's layers are
// content-addressed and identical on both hosts. The shim's backup task
// restores through the runc task service instead (taskRestorer); this one
// serves the engine's lab tests, which run without a shim.
type RuncRestorer struct {
	RuncArgv []string // default ["runc"]
	// NetNS is the standby network namespace the container is restored
	// into; its TCP metrics are primed for the checkpoint's peers
	// (criu.PrimeTCPMetrics). "" leaves them alone.
	NetNS       string
	RuncRoot    string
	ID          string // id of the restored container
	Spec        []byte // OCI config.json
	Lower       []string
	CgroupsPath string
	WorkDir     string // bundle, overlay upper/work and restore logs; one file system
	Launcher    launch.Launcher
	// Logger receives criu.Restore's log lines: pass the pair-scoped
	// logger (e.g. BackupOptions.Logger.With("pair", cfg.Pair, "role",
	// "backup")). Default slog.Default().
	Logger *slog.Logger

	mu      sync.Mutex
	unmount func() error
}

// Restore implements replication.Restorer.
func (r *RuncRestorer) Restore(ctx context.Context, c ckptstore.Checkpoint) (replication.RestoredContainer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unmount != nil {
		return replication.RestoredContainer{}, errors.New("restorer already used")
	}
	bundle := filepath.Join(r.WorkDir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return replication.RestoredContainer{}, fmt.Errorf("preparing bundle: %w", err)
	}
	if err := criu.WriteRestoreSpec(filepath.Join(bundle, "config.json"), r.Spec, r.CgroupsPath); err != nil {
		return replication.RestoredContainer{}, err
	}
	unmount, err := criu.PrepareRestoreRootfs(filepath.Join(bundle, "rootfs"), r.Lower,
		filepath.Join(r.WorkDir, "upper"), filepath.Join(r.WorkDir, "work"), c.Dir)
	if err != nil {
		return replication.RestoredContainer{}, err
	}
	r.unmount = unmount
	work := filepath.Join(r.WorkDir, "restore")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return replication.RestoredContainer{}, fmt.Errorf("preparing restore work dir: %w", err)
	}
	res, err := criu.Restore(ctx, criu.RestoreConfig{
		RuncArgv: r.RuncArgv, RuncRoot: r.RuncRoot, ID: r.ID, Bundle: bundle,
		ImagesDir: c.Dir, WorkDir: work, Launcher: r.Launcher, Logger: r.Logger, NetNS: r.NetNS,
	})
	if err != nil {
		return replication.RestoredContainer{}, err
	}
	return replication.RestoredContainer{ID: r.ID, Pid: res.Pid, RuncRoot: r.RuncRoot, Bundle: bundle}, nil
}

// Discard implements replication.Restorer (Remove).
func (r *RuncRestorer) Discard(ctx context.Context, _ replication.RestoredContainer) error {
	return r.Remove(ctx)
}

// Remove kills and deletes the restored container and unmounts its rootfs
// (for tests and for a shim deleting the task).
func (r *RuncRestorer) Remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unmount == nil {
		return nil // nothing was restored
	}
	argv := r.RuncArgv
	if len(argv) == 0 {
		argv = []string{"runc"}
	}
	l := r.Launcher
	if l == nil {
		l = launch.OS{}
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, argv[0], append(append(append([]string{}, argv[1:]...), "--root", r.RuncRoot), args...)...)
		wait, err := l.Start(cmd)
		if err != nil {
			return err
		}
		_, err = wait()
		return err
	}
	var errs []error
	if err := run("kill", r.ID, "KILL"); err != nil {
		errs = append(errs, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := run("delete", "-f", r.ID)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.unmount != nil {
		if err := r.unmount(); err != nil {
			errs = append(errs, err)
		}
		r.unmount = nil
	}
	return errors.Join(errs...)
}

// LowerDirsFromMountOptions extracts the lowerdir list from overlay mount
// options (as printed by `ctr snapshots mounts` or given to the shim in
// the task's rootfs mounts).
func LowerDirsFromMountOptions(opts string) ([]string, error) {
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok && v != "" {
			return strings.Split(v, ":"), nil
		}
	}
	return nil, fmt.Errorf("no lowerdir in overlay options %q", opts)
}
