package shim

import (
	"context"
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/oom"
	oomv1 "github.com/containerd/containerd/v2/pkg/oom/v1"
	oomv2 "github.com/containerd/containerd/v2/pkg/oom/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
)

// The cgroup of a container restored by a promotion. The runc service
// loads a task's cgroup when runc creates it, not when runc restores it
// (its Create with a checkpoint has no pid yet, its Start loads nothing), so
// for the restored task it has no stats and watches no OOM. The shim
// answers both as the runc service does for a started container, from the
// cgroup of the restored init.

// Stats of a restored task, where the runc service has none.
func (s *TaskService) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	rep, placeholder := s.standbyOf(r.ID, "")
	if placeholder {
		return &taskAPI.StatsResponse{}, nil // nothing runs
	}
	resp, err := s.TTRPCTaskService.Stats(ctx, r)
	if err == nil || rep == nil || rep.standby == nil || !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return resp, err
	}
	pid := rep.standby.restoredPid()
	if pid == 0 {
		return resp, err
	}
	st, serr := cgroupStats(pid)
	if serr != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("stats of the restored container %s (pid %d): %w", r.ID, pid, serr))
	}
	return st, nil
}

// loadCgroup is the cgroup of pid: a cgroup1.Cgroup or a
// *cgroupsv2.Manager, as the runc service keeps them.
func loadCgroup(pid int) (any, error) {
	if cgroups.Mode() == cgroups.Unified {
		g, err := cgroupsv2.PidGroupPath(pid)
		if err != nil {
			return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
		}
		m, err := cgroupsv2.Load(g)
		if err != nil {
			return nil, fmt.Errorf("load cgroup %s: %w", g, err)
		}
		return m, nil
	}
	cg, err := cgroup1.Load(cgroup1.PidPath(pid))
	if err != nil {
		return nil, fmt.Errorf("load cgroups of pid %d: %w", pid, err)
	}
	return cg, nil
}

// cgroupStats are the stats of the cgroup of pid, encoded as the runc
// service encodes them.
func cgroupStats(pid int) (*taskAPI.StatsResponse, error) {
	cg, err := loadCgroup(pid)
	if err != nil {
		return nil, err
	}
	var stats any
	switch cg := cg.(type) {
	case *cgroupsv2.Manager:
		stats, err = cg.Stat()
	case cgroup1.Cgroup:
		stats, err = cg.Stat(cgroup1.IgnoreNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("read cgroup stats of pid %d: %w", pid, err)
	}
	data, err := typeurl.MarshalAny(stats)
	if err != nil {
		return nil, fmt.Errorf("encode cgroup stats: %w", err)
	}
	return &taskAPI.StatsResponse{Stats: typeurl.MarshalProto(data)}, nil
}

// watchOOM publishes TaskOOM for the restored task, as the runc service
// does for a task it created, until the replica is closed.
func (s *TaskService) watchOOM(rep *replica, pid int) error {
	cg, err := loadCgroup(pid)
	if err != nil {
		return err
	}
	var w oom.Watcher
	if _, v2 := cg.(*cgroupsv2.Manager); v2 {
		w, err = oomv2.New(s.publisher)
	} else {
		w, err = oomv1.New(s.publisher)
	}
	if err != nil {
		return fmt.Errorf("OOM watcher: %w", err)
	}
	if err := w.Add(rep.id, cg); err != nil {
		w.Close()
		return fmt.Errorf("watch the restored task's cgroup for OOM: %w", err)
	}
	ctx, cancel := context.WithCancel(rep.ctx)
	go func() {
		<-rep.closed
		cancel()
	}()
	go w.Run(ctx)
	return nil
}
