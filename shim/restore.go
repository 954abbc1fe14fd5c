package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/runtime/launch"
)

// taskRestorer is the backup's replication.Restorer: at a promotion it
// restores the last committed checkpoint as the container's runc task, the
// way containerd restores a checkpoint (the runc task service's Create with
// Checkpoint set, then Start: `runc restore`), so that from then on the
// container answers every task call as under io.containerd.runc.v2. The
// runc service passes runc no options of ours; they reach CRIU through the
// CRIU configuration file the bundle's spec names
// (criu.PrepareRestoreBundle). The restored tasks get CRIU's network
// namespace, so runc is started from a thread in the standby one.
type taskRestorer struct {
	s   *TaskService
	rep *replica
	req *taskAPI.CreateTaskRequest // the backup task's Create
}

// Restore implements replication.Restorer.
func (r *taskRestorer) Restore(ctx context.Context, c ckptstore.Checkpoint) (replication.RestoredContainer, error) {
	rep := r.rep
	ctx = r.runcServiceContext(ctx)
	done, err := rep.standby.beginPromotion()
	if err != nil {
		return replication.RestoredContainer{}, fmt.Errorf("container %s: not restored: %w", rep.id, err)
	}
	pid, err := r.restore(ctx, c)
	done(pid)
	if err != nil {
		return replication.RestoredContainer{}, err
	}
	return replication.RestoredContainer{ID: rep.id, Pid: pid, RuncRoot: rep.runcRoot, Bundle: r.req.Bundle}, nil
}

// Discard implements replication.Restorer: the restored task is killed
// through the runc service, which reports its exit as for any task; what
// is left is deleted as containerd deletes it.
func (r *taskRestorer) Discard(ctx context.Context, _ replication.RestoredContainer) error {
	rep := r.rep
	ctx = r.runcServiceContext(ctx)
	if _, err := r.s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: rep.id, Signal: uint32(unix.SIGKILL), All: true}); err != nil {
		return fmt.Errorf("container %s: killing the restored task: %w", rep.id, err)
	}
	return nil
}

// runcServiceContext is ctx for calls of the runc task service: the
// engine's context has no namespace, which the service needs, nor the
// container's logger.
func (r *taskRestorer) runcServiceContext(ctx context.Context) context.Context {
	return log.WithLogger(namespaces.WithNamespace(ctx, r.rep.ns), log.G(r.rep.ctx))
}

func (r *taskRestorer) restore(ctx context.Context, c ckptstore.Checkpoint) (int, error) {
	rep := r.rep
	begin := time.Now()
	// The checkpoint's writable layer goes into the upper dir of the task's
	// own snapshot before the runc service mounts it.
	if diff := filepath.Join(c.Dir, criu.RootfsDiffFile); fileExists(diff) {
		upper, err := upperDir(r.req.Rootfs, r.req.Bundle)
		if err != nil {
			return 0, err
		}
		if err := criu.ApplyRootfsDiff(diff, upper); err != nil {
			return 0, fmt.Errorf("writable layer into the task's rootfs: %w", err)
		}
	}
	prep, err := criu.PrepareRestoreBundle(criu.RestoreBundleConfig{
		Bundle: r.req.Bundle, ImagesDir: c.Dir, WorkDir: filepath.Join(rep.workDir, "restore"),
	})
	if err != nil {
		return 0, fmt.Errorf("preparing the bundle for the restore: %w", err)
	}
	defer func() {
		if err := prep.Release(); err != nil {
			log.G(ctx).WithError(err).Warn("releasing what the restore prepared")
		}
	}()
	if applied, err := criu.MoveNetSysctls(r.req.Bundle, rep.sn.NetnsPath()); err != nil {
		return 0, fmt.Errorf("preparing the bundle for the restore: %w", err)
	} else if len(applied) > 0 {
		log.G(ctx).WithField("sysctls", applied).Info("network sysctls of the spec applied to the standby namespace (runc restore refuses them there)")
	}
	// The restored connections' first retransmissions, after 200 ms.
	criu.PrimeRestoredConnections(rep.sn.NetnsPath(), c.Dir, engineLogger(ctx))
	prepared := time.Now()
	create := proto.Clone(r.req).(*taskAPI.CreateTaskRequest)
	create.Checkpoint = c.Dir
	if _, err := r.s.TTRPCTaskService.Create(ctx, create); err != nil {
		return 0, fmt.Errorf("runc task service create from checkpoint %d: %w", c.Epoch, err)
	}
	release, err := holdStdio(r.req)
	if err != nil {
		r.s.deleteRuncTask(ctx, rep.id)
		return 0, err
	}
	defer release()
	created := time.Now()
	// runc restore starts synchronously within Start, from the calling
	// thread, and CRIU inherits runc's namespace.
	var resp *taskAPI.StartResponse
	env := rep.restoreCache.env()
	err = r.s.withEnv(env, func() error {
		return launch.InNetns(rep.sn.NetnsPath(), func() error {
			var err error
			resp, err = r.s.TTRPCTaskService.Start(ctx, &taskAPI.StartRequest{ID: rep.id})
			return err
		})
	})
	if err != nil {
		err = fmt.Errorf("runc task service start (runc restore) of checkpoint %d: %w%s", c.Epoch, err, r.criuErrors())
		r.s.deleteRuncTask(ctx, rep.id)
		return 0, err
	}
	log.G(ctx).WithFields(log.Fields{"pid": resp.Pid, "kernel_cache": len(env) > 0, "prepare": prepared.Sub(begin).Round(time.Microsecond),
		"create": created.Sub(prepared).Round(time.Microsecond), "start": time.Since(created).Round(time.Microsecond)}).
		Info("restored through the runc task service (prepare: writable layer and CRIU configuration; start: runc restore)")
	return int(resp.Pid), nil
}

// criuErrors is what CRIU's restore log says went wrong, where the runc
// service had runc put it.
func (r *taskRestorer) criuErrors() string {
	work := filepath.Join(r.req.Bundle, "work")
	if o, err := runc.ReadOptions(r.req.Bundle); err == nil && o != nil && o.CriuWorkPath != "" {
		work = o.CriuWorkPath
	}
	if e := criu.CRIULogErrors(filepath.Join(work, "restore.log")); e != "" {
		return "; restore.log: " + e
	}
	return ""
}

// holdStdio opens the read end of the task's stdout and stderr FIFOs for
// the restore. The runc service opens their write ends blocking, which
// waits for a reader, and the client that created the task (e.g. a
// detached ctr run) may be long gone at a promotion. The runc service keeps
// read ends of its own open once it has its write ends, as for any task, so
// ours are closed afterwards. A FIFO that no longer exists is made again.
func holdStdio(req *taskAPI.CreateTaskRequest) (release func(), err error) {
	var held []int
	release = func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}
	for _, p := range []string{req.Stdout, req.Stderr} {
		if p == "" || strings.Contains(p, "://") {
			continue // none, or not a FIFO (binary or file logging)
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				release()
				return nil, fmt.Errorf("stdio FIFO %s: %w", p, err)
			}
			if err := unix.Mkfifo(p, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
				release()
				return nil, fmt.Errorf("make stdio FIFO %s: %w", p, err)
			}
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			release()
			return nil, fmt.Errorf("open stdio FIFO %s: %w", p, err)
		}
		held = append(held, fd)
	}
	return release, nil
}

// upperDir is the writable directory of the task's overlay rootfs: from the
// rootfs mounts containerd passed (ctr, CRI), or, when there are none because
// the front end mounted the rootfs itself (dockerd), from the overlay mounted
// at the spec's root path. The standby never ran anything in such a mount,
// so what the restore unpacks into its upper dir is what the overlay shows.
func upperDir(rootfs []*types.Mount, bundle string) (string, error) {
	for _, m := range rootfs {
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok && v != "" {
				return v, nil
			}
		}
	}
	if len(rootfs) == 0 {
		spec, err := readSpec(bundle)
		if err != nil {
			return "", err
		}
		if spec.Root != nil && spec.Root.Path != "" {
			root := spec.Root.Path
			if !filepath.IsAbs(root) {
				root = filepath.Join(bundle, root)
			}
			upper, err := criu.OverlayUpperdir(root)
			if err != nil {
				return "", fmt.Errorf("the backup restores the checkpoint's writable layer into the container's overlay rootfs: %w", err)
			}
			return upper, nil
		}
	}
	return "", errors.New("the backup needs an overlay rootfs with an upper dir to restore the checkpoint's writable layer into")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
