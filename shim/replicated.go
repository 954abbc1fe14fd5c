// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"fmt"
	"os"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/shim/settings"
)

// createReplicated creates a replicated container: service network,
// then (primary) runc create and the output gate before the process runs,
// or (backup) a standby task and the backup engine. On failure nothing is
// left behind.
func (s *TaskService) createReplicated(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, cfg replication.Config) (_ *taskAPI.CreateTaskResponse, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if s.replica(r.ID) != nil {
		return nil, fmt.Errorf("replicated task already exists: %w", errdefs.ErrAlreadyExists)
	}
	if cfg.Mode == replication.ModeHybrid && cfg.Service == nil {
		return nil, hybridNeedsGate("the container has no service address (annotation " + settings.AnnotationPrefix + "service-ip)")
	}
	// Host settings are checked first so that a broken configuration is
	// reported as such.
	host, err := settings.LoadConfig(settings.ConfigPath())
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrFailedPrecondition)
	}
	creds, err := host.PeerTLS.Load()
	if err != nil {
		return nil, fmt.Errorf("annotation %srole=%s: replication needs peer TLS in the shim configuration %s: %v: %w",
			settings.AnnotationPrefix, cfg.Role, settings.ConfigPath(), err, errdefs.ErrFailedPrecondition)
	}
	if cfg.Image, err = imageDigest(ctx, s.containerd, ns, r.ID); err != nil {
		return nil, fmt.Errorf("annotation %srole=%s: the image must be the same on both hosts, and containerd cannot say which it is: %v: %w",
			settings.AnnotationPrefix, cfg.Role, err, errdefs.ErrFailedPrecondition)
	}
	plan, adoptPath, err := planNetns(spec, cfg.Service != nil)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if cfg.Mode == replication.ModeHybrid && adoptPath != "" {
		return nil, hybridNeedsGate("the spec names a network namespace of its own (" + adoptPath + ")")
	}
	if plan == netnsAdopt || plan == netnsHooks {
		where := adoptPath
		if plan == netnsHooks {
			where = "(made by the shim for the spec's hooks)"
		}
		if err := refuseGateBypass(spec, where); err != nil {
			return nil, fmt.Errorf("annotation %srole=%s: %v: %w", settings.AnnotationPrefix, cfg.Role, err, errdefs.ErrFailedPrecondition)
		}
	}
	log.G(ctx).WithField("role", cfg.Role).WithField("pair", cfg.Pair).Info("creating replicated container")

	rep := newReplica(ns, r.ID, cfg, host)
	// Engine goroutines outlive the request: they log with the request's
	// logger (container id) under a context nobody cancels.
	rep.ctx = log.WithLogger(namespaces.WithNamespace(context.Background(), ns), log.G(ctx))
	rep.bundle, rep.runcRoot = r.Bundle, runcRoot(ns, r.Options)
	rep.events = newReplicationEvents(rep.ctx, s.publisher, r.ID, rep.engineStatus)
	defer func() {
		if retErr != nil {
			if err := rep.close(context.WithoutCancel(ctx), replication.StopShutdown); err != nil {
				log.G(ctx).WithError(err).Error("cleanup after failed create")
			}
		}
	}()
	if err := rep.serviceNetwork(ctx, plan, adoptPath); err != nil {
		return nil, err
	}

	var resp *taskAPI.CreateTaskResponse
	if cfg.Role == replication.RolePrimary {
		if resp, err = s.createPrimary(ctx, rep, r, plan, creds); err != nil {
			return nil, err
		}
	} else {
		// The spec runc restores with at a promotion names the standby
		// namespace, as a primary's names its service namespace.
		if plan == netnsCreate || plan == netnsHooks {
			if err := setSpecNetns(r.Bundle, rep.sn.NetnsPath()); err != nil {
				return nil, err
			}
		}
		if plan == netnsHooks {
			if err := runCreateHooks(ctx, reaperLauncher(), r.Bundle, r.ID, rep.sn.NetnsPath()); err != nil {
				return nil, fmt.Errorf("the spec's hooks on the standby namespace: %w", err)
			}
			if err := rep.sn.AdoptLinks(true); err != nil {
				return nil, err
			}
		}
		rep.standby = newStandbyTask(os.Getpid())
		if err := s.standbyEngine(ctx, rep, creds, r); err != nil {
			return nil, err
		}
		resp = &taskAPI.CreateTaskResponse{Pid: uint32(os.Getpid())}
	}
	if err := rep.publishStatus(rep.ctx); err != nil {
		if cfg.Role == replication.RolePrimary {
			s.deleteRuncTask(ctx, r.ID)
		}
		return nil, err
	}
	s.mu.Lock()
	s.replicas[r.ID] = rep
	s.mu.Unlock()
	if rep.standby != nil {
		s.watchStandby(rep)
		s.publish(rep, taskCreateEvent(r, resp.Pid))
	}
	return resp, nil
}

// createPrimary points the spec at the service namespace, creates the
// container with runc and gates its traffic before it starts.
func (s *TaskService) createPrimary(ctx context.Context, rep *replica, r *taskAPI.CreateTaskRequest, plan netnsPlan, creds *peertls.Credentials) (*taskAPI.CreateTaskResponse, error) {
	if plan == netnsCreate || plan == netnsHooks {
		if err := setSpecNetns(r.Bundle, rep.sn.NetnsPath()); err != nil {
			return nil, err
		}
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("runc create: %w", err)
	}
	if plan == netnsHooks { // runc ran them: the namespace has its network
		if err := rep.sn.AdoptLinks(false); err != nil {
			s.deleteRuncTask(ctx, r.ID)
			return nil, err
		}
	}
	if err := rep.gate(ctx, creds); err != nil {
		s.deleteRuncTask(ctx, r.ID)
		return nil, fmt.Errorf("gating the container's traffic: %w", err)
	}
	return resp, nil
}

// deleteRuncTask undoes a runc create after a later step failed.
func (s *TaskService) deleteRuncTask(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	if _, err := s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		log.G(ctx).WithError(err).Error("deleting the runc container after a failed create")
	}
}

// hybridNeedsGate refuses hybrid mode where the shim has no gate namespace
// of its own: the replay at a failover feeds the log to the container and
// judges its output there (docs/HYBRID.md).
func hybridNeedsGate(why string) error {
	return fmt.Errorf("annotation %smode=%s: %s; hybrid mode needs the service network the shim creates, with its gate namespace; use %s: %w",
		settings.AnnotationPrefix, replication.ModeHybrid, why, replication.ModeEpoch, errdefs.ErrNotImplemented)
}
