// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package shim is the containerd side of io.rrc.v1: the shim manager and the
// task service. The task service wraps containerd's runc task service, so a
// container without io.rrc.* annotations runs exactly as under
// io.containerd.runc.v2; replicated containers are handed to the replication
// engine around the task lifecycle (replicated.go, replica.go, standby.go,
// restore.go; docs/REPLICATED-TASKS.md).
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
)

// TaskService is the ttrpc task service of io.rrc.v1.
type TaskService struct {
	taskAPI.TTRPCTaskService // the runc task service
	publisher                shim.Publisher
	// containerd is containerd's gRPC address: a replicated container's
	// image digest is asked there.
	containerd string

	mu       sync.Mutex
	replicas map[string]*replica // by container id

	envMu sync.Mutex // withEnv
}

// NewTaskService wraps a new runc task service; containerdAddress is
// containerd's gRPC address.
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service, containerdAddress string) (*TaskService, error) {
	s := &TaskService{publisher: publisher, containerd: containerdAddress, replicas: map[string]*replica{}}
	runc, err := task.NewTaskService(ctx, &runcEvents{Publisher: publisher, s: s}, sd)
	if err != nil {
		return nil, err
	}
	s.TTRPCTaskService = runc
	return s, nil
}

// runcEvents publishes the runc service's events, except those of a
// backup's restore: containerd saw the backup's task created and started
// (the placeholder) and must see one task go on, not a second start; its
// one exit is the restored container's (or the placeholder's if it never
// was promoted).
type runcEvents struct {
	shim.Publisher
	s *TaskService
}

func (p *runcEvents) Publish(ctx context.Context, topic string, event events.Event) error {
	var id string
	promotion := false
	switch e := event.(type) {
	case *eventstypes.TaskCreate:
		id, promotion = e.ContainerID, true
	case *eventstypes.TaskStart:
		id, promotion = e.ContainerID, true
	case *eventstypes.TaskDelete:
		// A restore that failed is deleted while the placeholder stays.
		id = e.ContainerID
	}
	if id != "" {
		if rep := p.s.replica(id); rep != nil && rep.standby != nil && (promotion || !rep.standby.isPromoted()) {
			log.G(ctx).WithField("id", id).WithField("topic", topic).Debug("event of the backup's restore not published: containerd knows the task")
			return nil
		}
	}
	return p.Publisher.Publish(ctx, topic, event)
}

// RegisterTTRPC registers the wrapper, not the runc service, so that every
// call passes through it.
func (s *TaskService) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// withID puts the container id on every log line of a request.
func withID(ctx context.Context, id string) context.Context {
	return log.WithLogger(ctx, log.G(ctx).WithField("id", id))
}

func (s *TaskService) replica(id string) *replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replicas[id]
}

// standbyOf returns the replica of id if id is a backup's placeholder task
// (not promoted) and the request is about its init (not an exec).
func (s *TaskService) standbyOf(id, execID string) (*replica, bool) {
	rep := s.replica(id)
	if rep == nil || rep.standby == nil || execID != "" || rep.standby.isPromoted() {
		return rep, false
	}
	return rep, true
}

// Create validates the io.rrc.* annotations and the runtime options before
// anything is created, so that a bad value fails `ctr run` with a message
// naming what is wrong; a replicated container then gets its service
// network and engine (replicated.go).
func (s *TaskService) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	ctx = withID(ctx, r.ID)
	opts, err := RuncOptions(r.Options)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	r.Options = opts

	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cfg, err := settings.ParseAnnotations(r.ID, spec.Annotations)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %v: %w", r.ID, err, errdefs.ErrInvalidArgument))
	}
	if cfg.Enabled() && settings.IsCRISandbox(spec.Annotations) {
		// Kubernetes sets annotations on pods only, and CRI's
		// pod_annotations hand them to the sandbox as well as to the
		// pod's containers: they are the containers'. Checked above, so
		// that a wrong value fails the pod's start.
		log.G(ctx).WithField("role", cfg.Role).Info("CRI pod sandbox (pause): its io.rrc.* annotations are the pod's, for its containers; the sandbox runs unreplicated")
	} else if cfg.Enabled() {
		resp, err := s.createReplicated(ctx, r, spec, *cfg)
		if err != nil {
			log.G(ctx).WithError(err).WithField("role", cfg.Role).Error("replicated container not created")
			return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, err))
		}
		return resp, nil
	}
	return s.TTRPCTaskService.Create(ctx, r)
}

// Start starts the task; a primary starts replicating once it runs.
func (s *TaskService) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	ctx = withID(ctx, r.ID)
	if rep, ok := s.standbyOf(r.ID, r.ExecID); ok {
		return s.startStandby(ctx, rep)
	}
	resp, err := s.TTRPCTaskService.Start(ctx, r)
	if err != nil {
		return nil, err
	}
	if rep := s.replica(r.ID); rep != nil && rep.primaryEngine() != nil && r.ExecID == "" {
		rep.replicate(rep.ctx, rep.runcRoot)
	}
	return resp, nil
}

// Delete deletes the task and, for a replicated container, everything
// replication made for it.
func (s *TaskService) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	ctx = withID(ctx, r.ID)
	if rep, ok := s.standbyOf(r.ID, r.ExecID); ok {
		resp, deleted, err := s.deleteStandby(ctx, rep)
		if deleted {
			return resp, err
		} // promoted meanwhile: the runc service's task
	}
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil {
		return nil, err
	}
	if rep := s.replica(r.ID); rep != nil && r.ExecID == "" {
		s.forget(r.ID)
		// Deleted through containerd (after a kill, or its end): on purpose.
		if err := rep.close(ctx, replication.StopDeleted); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("container %s deleted, but replication cleanup failed: %w", r.ID, err))
		}
	}
	return resp, nil
}

func (s *TaskService) forget(id string) {
	s.mu.Lock()
	delete(s.replicas, id)
	s.mu.Unlock()
}

// Shutdown stops every engine of this shim before the runc service decides
// whether the shim ends.
func (s *TaskService) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.replicas)
	s.mu.Unlock()
	if n > 0 {
		// Tasks still exist: like the runc service, the shim stays.
		return &emptypb.Empty{}, nil
	}
	return s.TTRPCTaskService.Shutdown(ctx, r)
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse OCI spec %s: %v: %w", filepath.Join(bundle, "config.json"), err, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}
