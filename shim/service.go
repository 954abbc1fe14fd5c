// Package shim is the containerd side of io.rrc.v1: the shim manager and the
// task service. The task service wraps containerd's runc task service, so a
// container without io.rrc.* annotations runs exactly as under
// io.containerd.runc.v2; replicated containers are handed to the replication
// engine around the task lifecycle.
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RuntimeName is the runtime name containerd knows this shim by.
const RuntimeName = "io.rrc.v1"

// TaskService is the ttrpc task service of io.rrc.v1.
type TaskService struct {
	taskAPI.TTRPCTaskService // the runc task service
}

// NewTaskService wraps a new runc task service.
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (*TaskService, error) {
	runc, err := task.NewTaskService(ctx, publisher, sd)
	if err != nil {
		return nil, err
	}
	return &TaskService{TTRPCTaskService: runc}, nil
}

// RegisterTTRPC registers the wrapper, not the runc service, so that every
// call passes through it.
func (s *TaskService) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create validates the io.rrc.* annotations and the runtime options before
// anything is created, so that a bad value fails `ctr run` with a message
// naming what is wrong.
func (s *TaskService) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("id", r.ID))
	opts, err := RuncOptions(r.Options)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	r.Options = opts

	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cfg, err := ParseAnnotations(r.ID, spec.Annotations)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %v: %w", r.ID, err, errdefs.ErrInvalidArgument))
	}
	if cfg.Enabled() {
		// Host settings are checked first so that a broken configuration is
		// reported as such.
		if _, err := LoadConfig(ConfigPath()); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %v: %w", r.ID, err, errdefs.ErrFailedPrecondition))
		}
		log.G(ctx).WithField("role", cfg.Role).Warn("refusing replicated container: replication engine not built yet")
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: annotation %s%s=%s: replication is not available in this build of %s: %w",
			r.ID, AnnotationPrefix, "role", cfg.Role, RuntimeName, errdefs.ErrFailedPrecondition))
	}
	return s.TTRPCTaskService.Create(ctx, r)
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
