// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"fmt"
	"net"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/shim/settings"
)

// standbyEngine starts the backup's engine for a placeholder task. At a
// promotion the engine restores the last committed checkpoint through the
// runc task service as this task (taskRestorer), in the standby namespace,
// from the request containerd created the task with.
func (s *TaskService) standbyEngine(ctx context.Context, rep *replica, creds *peertls.Credentials, r *taskAPI.CreateTaskRequest) error {
	if rep.sn == nil {
		return fmt.Errorf("annotation %sservice-ip: a backup needs a standby service namespace (its own, or one the spec names)", settings.AnnotationPrefix)
	}
	if _, err := upperDir(r.Rootfs, r.Bundle); err != nil {
		return err
	}
	// The restore's temporary routes: the service prefix, or for an
	// adopted namespace every destination (servicenet.StandbyService).
	var prefix *net.IPNet
	if rep.cfg.Service != nil {
		prefix = rep.cfg.Service.Address
	}
	restorer := &taskRestorer{s: s, rep: rep, req: proto.Clone(r).(*taskAPI.CreateTaskRequest)}
	sn := rep.sn
	rep.restoreCache = warmRestoreCache(rep.ctx, rep)
	var network replication.ServicePromoter = servicenet.StandbyService{NetNS: sn.NetnsPath(), Prefix: prefix, Up: func(ctx context.Context) error {
		tm, err := sn.Promote(ctx)
		log.G(ctx).WithField("timings", fmt.Sprintf("%+v", tm)).Info("service address taken over")
		return err
	}}
	hybrid := rep.cfg.Mode == replication.ModeHybrid
	hold := &netfilter.Path{Launcher: reaperLauncher(), Logger: engineLogger(ctx), WholePackets: hybrid}
	gate, input, ok, err := OpenPromotionHold(ctx, sn, hold)
	if err != nil {
		return err
	}
	if ok {
		rep.hold = hold
		held := HeldStandby{StandbyService: network.(servicenet.StandbyService), SN: sn, Gate: gate}
		network = held
		if hybrid {
			links, err := sn.OpenReplayLinks()
			if err != nil {
				return err
			}
			network = ReplayStandby{HeldStandby: held, Input: input, Links: links}
		}
	}
	if err := rep.openFence(ctx); err != nil {
		return err
	}
	rep.backup, err = replication.StartBackup(ctx, replication.BackupOptions{
		Config: rep.cfg, TLS: creds, StoreDir: rep.storeDir(), DurableStore: rep.host.CheckpointFsync, Restorer: restorer, Logger: engineLogger(ctx),
		Network: network, OnTransition: rep.onTransition(), Fence: rep.engineFence(),
	})
	if err != nil {
		return fmt.Errorf("backup engine: %w", err)
	}
	return nil
}
