// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
)

// The task RPCs of a backup's standby task (standby.go holds its state
// machine). Every other container, and execs, go to the runc service.

func (s *TaskService) startStandby(ctx context.Context, rep *replica) (*taskAPI.StartResponse, error) {
	pid, err := rep.standby.start()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	log.G(ctx).WithField("listen", rep.cfg.Listen).Info("standby task running: backup waits for its primary")
	s.publish(rep, &eventstypes.TaskStart{ContainerID: rep.id, Pid: uint32(pid)})
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

func (s *TaskService) deleteStandby(ctx context.Context, rep *replica) (*taskAPI.DeleteResponse, error) {
	if err := rep.standby.canDelete(); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	snap := rep.standby.snapshot()
	s.forget(rep.id)
	if err := rep.close(ctx); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: deleting standby task: %w", rep.id, err))
	}
	s.publish(rep, &eventstypes.TaskDelete{ContainerID: rep.id, ID: rep.id, Pid: uint32(snap.Pid),
		ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)})
	return &taskAPI.DeleteResponse{Pid: uint32(snap.Pid), ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}, nil
}

// watchStandby waits for the backup's promotion and then adopts the
// restored container as the task, and reports the exit of the adopted
// process. The restored init is re-parented to this shim (a subreaper)
// when runc restore exits, so the reaper sees its exit like a child's.
func (s *TaskService) watchStandby(rep *replica) {
	exits := reaper.Default.Subscribe()
	ctx := rep.ctx
	go func() {
		defer reaper.Default.Unsubscribe(exits)
		promoted := rep.backup.Promoted()
		// Exits seen before the adoption (the restored init could die
		// between runc restore and the adoption); few, bounded.
		early := map[int]int{}
		for {
			select {
			case <-rep.closed:
				return
			case <-rep.standby.exited:
				return
			case <-promoted:
				promoted = nil
				s.adoptRestored(ctx, rep)
				if pid := rep.standby.restoredPid(); pid != 0 {
					if status, ok := early[pid]; ok {
						s.standbyExited(ctx, rep, status)
					}
				}
			case e := <-exits:
				if pid := rep.standby.restoredPid(); pid != 0 && e.Pid == pid {
					s.standbyExited(ctx, rep, e.Status)
				} else if pid == 0 && len(early) < 256 {
					early[e.Pid] = e.Status
				}
			}
		}
	}()
}

// adoptRestored makes the promoted backup's restored container the task.
func (s *TaskService) adoptRestored(ctx context.Context, rep *replica) {
	st := rep.backup.Status()
	logger := log.G(ctx)
	if f := st.Failover; f != nil {
		logger = logger.WithFields(log.Fields{"epoch": f.Epoch, "detection_ms": f.DetectionMS, "stop_ms": f.StopMS,
			"prepare_ms": f.PrepareMS, "restore_ms": f.RestoreMS, "network_ms": f.NetworkMS, "total_ms": f.TotalMS})
	}
	rc, ok := rep.backup.Restored()
	if !ok {
		// Nothing runs: the task ends so that an orchestrator notices.
		logger.WithField("reason", st.Reason).Error("promotion failed: the standby task ends with status 255")
		s.standbyExited(ctx, rep, 255)
		return
	}
	if err := rep.standby.adopt(rc.Pid); err != nil {
		logger.WithError(err).Error("adopting the restored container")
		return
	}
	rep.status.Kick()
	logger.WithField("pid", rc.Pid).Info("failover: restored container is now the task (primary after failover)")
}

func (s *TaskService) standbyExited(ctx context.Context, rep *replica, status int) {
	if !rep.standby.exit(status) {
		return
	}
	snap := rep.standby.snapshot()
	log.G(ctx).WithField("pid", snap.Pid).WithField("status", status).Info("task exited")
	s.publish(rep, &eventstypes.TaskExit{ContainerID: rep.id, ID: rep.id, Pid: uint32(snap.Pid),
		ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)})
}

func (s *TaskService) publish(rep *replica, evt any) {
	if err := s.publisher.Publish(rep.ctx, runtime.GetTopic(evt), evt); err != nil {
		log.G(rep.ctx).WithError(err).Warn("publishing task event")
	}
}

func taskCreateEvent(r *taskAPI.CreateTaskRequest, pid uint32) *eventstypes.TaskCreate {
	return &eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: pid,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}}
}

// State reports a standby task as RUNNING with the shim's pid (or the
// restored init's after a promotion).
func (s *TaskService) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	rep, ok := s.standbyOf(r.ID, r.ExecID)
	if !ok {
		return s.TTRPCTaskService.State(ctx, r)
	}
	snap := rep.standby.snapshot()
	st := task.Status_RUNNING
	switch snap.State {
	case standbyCreated:
		st = task.Status_CREATED
	case standbyExited:
		st = task.Status_STOPPED
	}
	resp := &taskAPI.StateResponse{ID: rep.id, Bundle: rep.bundle, Pid: uint32(snap.Pid), Status: st}
	if snap.State == standbyExited {
		resp.ExitStatus, resp.ExitedAt = uint32(snap.Status), protobuf.ToTimestamp(snap.ExitedAt)
	}
	return resp, nil
}

// Kill ends a placeholder at once (128+signal) and signals a restored
// container's init.
func (s *TaskService) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	rep, ok := s.standbyOf(r.ID, r.ExecID)
	if !ok {
		return s.TTRPCTaskService.Kill(ctx, r)
	}
	ctx = withID(ctx, r.ID)
	pid, exited, err := rep.standby.kill(r.Signal)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if exited {
		snap := rep.standby.snapshot()
		log.G(ctx).WithField("signal", r.Signal).Info("standby task killed")
		s.publish(rep, &eventstypes.TaskExit{ContainerID: rep.id, ID: rep.id, Pid: uint32(snap.Pid),
			ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)})
		return &emptypb.Empty{}, nil
	}
	if err := unix.Kill(pid, unix.Signal(r.Signal)); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("signal %d to restored init %d: %w", r.Signal, pid, err))
	}
	return &emptypb.Empty{}, nil
}

// Wait returns when the standby task (or the restored container) exits.
func (s *TaskService) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	rep, ok := s.standbyOf(r.ID, r.ExecID)
	if !ok {
		return s.TTRPCTaskService.Wait(ctx, r)
	}
	select {
	case <-rep.standby.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	snap := rep.standby.snapshot()
	return &taskAPI.WaitResponse{ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}, nil
}

// Pids lists the restored init, or nothing for a placeholder.
func (s *TaskService) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	rep, ok := s.standbyOf(r.ID, "")
	if !ok {
		return s.TTRPCTaskService.Pids(ctx, r)
	}
	resp := &taskAPI.PidsResponse{}
	if pid := rep.standby.restoredPid(); pid != 0 {
		resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: uint32(pid)})
	}
	return resp, nil
}

// Stats has nothing to report for a standby task.
func (s *TaskService) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	if _, ok := s.standbyOf(r.ID, ""); ok {
		return &taskAPI.StatsResponse{}, nil
	}
	return s.TTRPCTaskService.Stats(ctx, r)
}

// Connect reports the standby task's pid.
func (s *TaskService) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp, err := s.TTRPCTaskService.Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	if rep, ok := s.standbyOf(r.ID, ""); ok {
		resp.TaskPid = uint32(rep.standby.snapshot().Pid)
	}
	return resp, nil
}

// notStandby refuses what a standby task cannot do, also once it has become
// the restored container: runc restored that one outside the runc task
// service, which would own its execs, pauses and updates.
func (s *TaskService) notStandby(id, what string) error {
	rep, ok := s.standbyOf(id, "")
	if !ok {
		return nil
	}
	if pid := rep.standby.restoredPid(); pid != 0 {
		return errgrpc.ToGRPC(fmt.Errorf("container %s was restored on this host by a failover (pid %d): %s of the restored container is not available (kill, wait, delete are): %w",
			id, pid, what, errdefs.ErrNotImplemented))
	}
	return errgrpc.ToGRPC(fmt.Errorf("container %s is a replication backup (annotation %srole=%s): %s is not available: %w",
		id, settings.AnnotationPrefix, replication.RoleBackup, what, errdefs.ErrNotImplemented))
}

func (s *TaskService) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "exec"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Exec(ctx, r)
}

func (s *TaskService) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "pause"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Pause(ctx, r)
}

func (s *TaskService) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "resume"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Resume(ctx, r)
}

func (s *TaskService) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "checkpoint"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Checkpoint(ctx, r)
}

func (s *TaskService) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "update"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Update(ctx, r)
}

// CloseIO and ResizePty are no-ops for a standby task: it has no stdio.
func (s *TaskService) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	if _, ok := s.standbyOf(r.ID, r.ExecID); ok {
		return &emptypb.Empty{}, nil
	}
	return s.TTRPCTaskService.CloseIO(ctx, r)
}

func (s *TaskService) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	if _, ok := s.standbyOf(r.ID, r.ExecID); ok {
		return &emptypb.Empty{}, nil
	}
	return s.TTRPCTaskService.ResizePty(ctx, r)
}
