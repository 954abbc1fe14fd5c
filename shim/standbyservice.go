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
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
)

// The task RPCs of a backup's placeholder task (standby.go). Every other
// container, execs, and a backup's container once promoted go to the runc
// task service.

func (s *TaskService) startStandby(ctx context.Context, rep *replica) (*taskAPI.StartResponse, error) {
	pid, err := rep.standby.start()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	log.G(ctx).WithField("listen", rep.cfg.Listen).Info("standby task running: backup waits for its primary")
	s.publish(rep, &eventstypes.TaskStart{ContainerID: rep.id, Pid: uint32(pid)})
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

// deleteStandby deletes a placeholder; a promoted task is the runc
// service's (deleted reports false).
func (s *TaskService) deleteStandby(ctx context.Context, rep *replica) (_ *taskAPI.DeleteResponse, deleted bool, _ error) {
	promoted, err := rep.standby.canDelete()
	if err != nil {
		return nil, true, errgrpc.ToGRPC(err)
	}
	if promoted {
		return nil, false, nil
	}
	snap := rep.standby.snapshot()
	s.forget(rep.id)
	if rep.hooksNetns {
		// runc never ran this container: its poststop hooks (nerdctl's
		// CNI release) are the shim's to run, as runc delete would.
		if err := runPoststopHooks(ctx, reaperLauncher(), rep.bundle, rep.id, rep.sn.NetnsPath()); err != nil {
			log.G(ctx).WithError(err).Warn("poststop hooks of the standby task")
		}
	}
	if err := rep.close(ctx, replication.StopDeleted); err != nil {
		return nil, true, errgrpc.ToGRPC(fmt.Errorf("container %s: deleting standby task: %w", rep.id, err))
	}
	s.publish(rep, &eventstypes.TaskDelete{ContainerID: rep.id, ID: rep.id, Pid: uint32(snap.Pid),
		ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)})
	return &taskAPI.DeleteResponse{Pid: uint32(snap.Pid), ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}, true, nil
}

// watchStandby waits for the backup's promotion: a failed one ends the
// placeholder, so that whoever watches the task notices; after a
// successful one the runc service owns the task and reports its exit.
func (s *TaskService) watchStandby(rep *replica) {
	go func() {
		select {
		case <-rep.closed:
			return
		case <-rep.standby.exited:
			return
		case <-rep.backup.Promoted():
		}
		ctx := rep.ctx
		st := rep.backup.Status()
		logger := log.G(ctx)
		if f := st.Failover; f != nil {
			logger = logger.WithFields(log.Fields{"epoch": f.Epoch, "detection_ms": f.DetectionMS, "stop_ms": f.StopMS,
				"prepare_ms": f.PrepareMS, "restore_ms": f.RestoreMS, "network_ms": f.NetworkMS, "total_ms": f.TotalMS})
		}
		rc, ok := rep.backup.Restored()
		if !ok && rep.standby.isPromoted() {
			// Restored, but the service address was not taken over: the
			// task runs unreachable, or was killed (its checkpoint did not
			// verify); rrcctl status says why.
			logger.WithField("reason", st.Reason).Error("promotion failed after the restore: the restored task is not the service (its address was not taken over)")
			return
		}
		if !ok {
			logger.WithField("reason", st.Reason).Error("promotion failed: the standby task ends with status 255")
			s.standbyExited(ctx, rep, 255)
			return
		}
		rep.status.Kick()
		logger.WithField("pid", rc.Pid).Info("failover: the restored container is the task, run by the runc task service (primary after failover)")
		if err := s.watchOOM(rep, rc.Pid); err != nil {
			logger.WithError(err).Warn("OOM events of the restored task will not be published")
		}
	}()
}

func (s *TaskService) standbyExited(ctx context.Context, rep *replica, status int) {
	if !rep.standby.exit(status) {
		return
	}
	snap := rep.standby.snapshot()
	log.G(ctx).WithField("pid", snap.Pid).WithField("status", status).Info("standby task exited")
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

// State reports a placeholder as RUNNING with the shim's pid.
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

// Kill ends a placeholder at once (128+signal); a kill during a promotion
// waits for it and then goes to the restored task.
func (s *TaskService) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	if rep, ok := s.standbyOf(r.ID, r.ExecID); ok {
		ctx := withID(ctx, r.ID)
		promoted, err := rep.standby.kill(r.Signal)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		if !promoted {
			snap := rep.standby.snapshot()
			log.G(ctx).WithField("signal", r.Signal).Info("standby task killed")
			s.publish(rep, &eventstypes.TaskExit{ContainerID: rep.id, ID: rep.id, Pid: uint32(snap.Pid),
				ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)})
			return &emptypb.Empty{}, nil
		}
	}
	if rep := s.replica(r.ID); rep != nil && r.ExecID == "" && r.Signal == uint32(unix.SIGKILL) {
		// The container ends on purpose: its backup must not take it
		// over, even if this shim dies before the Delete. Other signals
		// may be caught; their goodbye waits for the Delete.
		rep.stopPrimary(withID(ctx, r.ID), replication.StopDeleted, fmt.Sprintf("container %s killed through containerd (SIGKILL)", r.ID))
	}
	return s.TTRPCTaskService.Kill(ctx, r)
}

// Wait returns when the placeholder ends, or, once it is promoted, when
// the restored task does.
func (s *TaskService) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	if rep, ok := s.standbyOf(r.ID, r.ExecID); ok {
		select {
		case <-rep.standby.exited:
			snap := rep.standby.snapshot()
			return &taskAPI.WaitResponse{ExitStatus: uint32(snap.Status), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}, nil
		case <-rep.standby.promoted:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.TTRPCTaskService.Wait(ctx, r)
}

// Connect reports the placeholder's pid.
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

// notStandby refuses what a placeholder cannot do: nothing runs in it.
func (s *TaskService) notStandby(id, what string) error {
	if _, ok := s.standbyOf(id, ""); !ok {
		return nil
	}
	return errgrpc.ToGRPC(fmt.Errorf("container %s is a replication backup (annotation %srole=%s): %s is not available until a failover restores it here: %w",
		id, settings.AnnotationPrefix, replication.RoleBackup, what, errdefs.ErrNotImplemented))
}

// Pids lists a placeholder's pid (the shim's, as State reports it) until
// it ends. A restarted containerd takes a shim whose task lists no process
// for a leaked one (core/runtime/v2 shouldCleanupShim): it would delete the
// task, close the connection and run the dead-shim cleanup, ending the backup.
func (s *TaskService) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	if rep, ok := s.standbyOf(r.ID, ""); ok {
		return &taskAPI.PidsResponse{Processes: standbyPids(rep.standby.snapshot())}, nil
	}
	return s.TTRPCTaskService.Pids(ctx, r)
}

// standbyPids is what Pids lists of a placeholder: its pid while it is
// created or standing by, nothing once it has ended.
func standbyPids(snap standbySnapshot) []*task.ProcessInfo {
	if snap.State == standbyExited || snap.Pid <= 0 {
		return nil
	}
	return []*task.ProcessInfo{{Pid: uint32(snap.Pid)}}
}

func (s *TaskService) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := s.notStandby(r.ID, "exec"); err != nil {
		return nil, err
	}
	if rep := s.replica(r.ID); rep != nil && rep.sn != nil && r.Spec != nil {
		if _, gated := rep.sn.Gate(); !gated {
			if err := refuseExecGateBypass(r.Spec.GetValue(), rep.sn.NetnsPath()); err != nil {
				return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: exec %s: %v: %w", r.ID, r.ExecID, err, errdefs.ErrFailedPrecondition))
			}
		}
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

// CloseIO and ResizePty are no-ops for a placeholder: it has no stdio.
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
