// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"net"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
)

// Update applies a task update; one that carries settings.AnnotationProtect
// is the re-protection of a restored container, not a change of resources.
func (s *TaskService) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	if addr, ok := r.Annotations[settings.AnnotationProtect]; ok {
		ctx = withID(ctx, r.ID)
		rep := s.replica(r.ID)
		if rep == nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("container %s is not replicated: nothing to protect: %w", r.ID, errdefs.ErrFailedPrecondition))
		}
		if err := rep.protect(ctx, addr); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return &emptypb.Empty{}, nil
	}
	if err := s.notStandby(r.ID, "update"); err != nil {
		return nil, err
	}
	return s.TTRPCTaskService.Update(ctx, r)
}

// protect makes the container a failover restored here the primary of a
// new backup listening at addr (re-protection): the promotion's hold on the
// gate namespace gives way to a primary engine on the same namespace,
// which serves unprotected (output released) until the backup answers,
// then brings it in sync with a full checkpoint, as a primary re-pairs.
// The new backup is started as any (role backup, listening at addr, its
// peer name this host's).
func (r *replica) protect(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s=%q: want the new backup's listen address, host:port: %w", settings.AnnotationProtect, addr, errdefs.ErrInvalidArgument)
	}
	if r.backup == nil {
		return fmt.Errorf("container %s is a primary: it has a backup already; %s is for a backup that took over: %w", r.id, settings.AnnotationProtect, errdefs.ErrFailedPrecondition)
	}
	if _, ok := r.backup.Restored(); !ok {
		st := r.backup.Status()
		return fmt.Errorf("container %s is a backup (%s), not the service: only a container a failover restored here can take a backup: %w", r.id, st.State, errdefs.ErrFailedPrecondition)
	}
	if f := r.backup.Status().Failover; f != nil && f.Replay != nil && f.Replay.Translated > 0 {
		return fmt.Errorf("container %s: the gate translates the sequence numbers of %d connection(s) the replay carried on, which a new gate would not: not supported yet: %w",
			r.id, f.Replay.Translated, errdefs.ErrNotImplemented)
	}
	if r.fence.Etcd != nil {
		return fmt.Errorf("container %s: protecting a restored container under a witness is not supported yet: %w", r.id, errdefs.ErrNotImplemented)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.primary != nil {
		return fmt.Errorf("container %s is protected already: %w", r.id, errdefs.ErrAlreadyExists)
	}
	cfg := r.cfg
	cfg.Role, cfg.Peer, cfg.Listen, cfg.PeerName = replication.RolePrimary, addr, "", ""
	creds, err := r.host.PeerTLS.Load()
	if err != nil {
		return fmt.Errorf("container %s: peer TLS: %w", r.id, err)
	}
	// What the promotion held is passed now; its rules and queues go, the
	// primary's come (output released meanwhile, as after the failover).
	if r.hold != nil {
		if err := r.hold.Close(ctx); err != nil {
			return fmt.Errorf("container %s: closing the promotion's hold: %w", r.id, err)
		}
		r.hold = nil
	}
	ck, err := r.checkpointer(ctx, r.runcRoot)
	if err != nil {
		return fmt.Errorf("container %s: %w", r.id, err)
	}
	primary, err := r.newPrimary(ctx, cfg, creds)
	if err != nil {
		ck.Close()
		return fmt.Errorf("container %s: %w", r.id, err)
	}
	if err := primary.StartUnprotected(ctx, ck, "took over at a failover; pairing with the new backup at "+addr); err != nil {
		ck.Close()
		return errors.Join(fmt.Errorf("container %s: %w", r.id, err), primary.Close(ctx))
	}
	r.primary = primary
	log.G(ctx).WithField("backup", addr).Warn("protecting the restored container: serving unprotected until the new backup is in sync")
	return nil
}
