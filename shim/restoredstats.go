package shim

import (
	"context"
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
)

// Stats of a container restored by a promotion. The runc service loads a
// task's cgroup when runc creates it, not when runc restores it (its Create
// with a checkpoint has no pid yet, its Start loads nothing), so it has no
// cgroup for the restored task and reports none; these are its stats as
// the runc service reports a started container's, from the cgroup of the
// restored init.
func (s *TaskService) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	rep, placeholder := s.standbyOf(r.ID, "")
	if placeholder {
		return &taskAPI.StatsResponse{}, nil // nothing runs
	}
	resp, err := s.TTRPCTaskService.Stats(ctx, r)
	if err == nil || rep == nil || rep.standby == nil || !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return resp, err
	}
	rc, ok := rep.backup.Restored()
	if !ok {
		return resp, err
	}
	st, serr := cgroupStats(rc.Pid)
	if serr != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("stats of the restored container %s (pid %d): %w", r.ID, rc.Pid, serr))
	}
	return st, nil
}

// cgroupStats are the stats of the cgroup of pid, encoded as the runc
// service encodes them.
func cgroupStats(pid int) (*taskAPI.StatsResponse, error) {
	var stats any
	if cgroups.Mode() == cgroups.Unified {
		g, err := cgroupsv2.PidGroupPath(pid)
		if err != nil {
			return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
		}
		m, err := cgroupsv2.Load(g)
		if err != nil {
			return nil, fmt.Errorf("load cgroup %s: %w", g, err)
		}
		if stats, err = m.Stat(); err != nil {
			return nil, fmt.Errorf("read cgroup %s: %w", g, err)
		}
	} else {
		cg, err := cgroup1.Load(cgroup1.PidPath(pid))
		if err != nil {
			return nil, fmt.Errorf("load cgroups of pid %d: %w", pid, err)
		}
		if stats, err = cg.Stat(cgroup1.IgnoreNotExist); err != nil {
			return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, err)
		}
	}
	data, err := typeurl.MarshalAny(stats)
	if err != nil {
		return nil, fmt.Errorf("encode cgroup stats: %w", err)
	}
	return &taskAPI.StatsResponse{Stats: typeurl.MarshalProto(data)}, nil
}
