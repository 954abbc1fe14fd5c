// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/iorrc/rrc/netfilter"
	"net"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/shim/settings"
)

// standbyEngine starts the backup's engine for a standby task. At a
// promotion the engine restores the last committed checkpoint with a
// RuncRestorer into a bundle of its own (the backup's spec, pointed at the
// standby namespace, over the image layers containerd mounted for this
// task); the shim then adopts the restored init as the task's process.
//
// Restoring through the wrapped runc task service instead (Create with
// Checkpoint, then Start) would make the runc service own the restored
// process, but its restore passes no --tcp-established (process/init.go
// builds runc.RestoreOpts without it), and the clients' connections are the
// point of the failover; see docs/CONTAINERD-INTEGRATION.md.
func (r *replica) standbyEngine(ctx context.Context, creds *peertls.Credentials, spec []byte, cgroupsPath string, rootfs []*types.Mount) error {
	lower, err := lowerDirs(rootfs)
	if err != nil {
		return err
	}
	if r.sn == nil {
		return fmt.Errorf("annotation %sservice-ip: a backup needs a standby service namespace (its own, or one the spec names)", settings.AnnotationPrefix)
	}
	// The restore's temporary routes: the service prefix, or for an
	// adopted namespace every destination (servicenet.StandbyService).
	var prefix *net.IPNet
	if r.cfg.Service != nil {
		prefix = r.cfg.Service.Address
	}
	r.restorer = &RuncRestorer{
		RuncRoot: filepath.Join(r.host.StateDir, "runc", r.ns),
		ID:       r.id, Spec: spec, Lower: lower, CgroupsPath: cgroupsPath,
		WorkDir:  filepath.Join(r.workDir, "restore"),
		Launcher: reaperLauncher(),
		// The primary's CRIU ran in the service namespace (it is not in the
		// checkpoint); CRIU restores into its own, so it runs in the standby.
		RuncArgv: []string{"nsenter", "--net=" + r.sn.NetnsPath(), "--", "runc"},
		NetNS:    r.sn.NetnsPath(),
	}
	sn := r.sn
	var network replication.ServicePromoter = servicenet.StandbyService{NetNS: sn.NetnsPath(), Prefix: prefix, Up: func(ctx context.Context) error {
		tm, err := sn.Promote(ctx)
		log.G(ctx).WithField("timings", fmt.Sprintf("%+v", tm)).Info("service address taken over")
		return err
	}}
	hold := &netfilter.Path{Launcher: reaperLauncher(), Logger: engineLogger(ctx)}
	gate, ok, err := OpenPromotionHold(ctx, sn, hold)
	if err != nil {
		return err
	}
	if ok {
		r.hold = hold
		network = HeldStandby{StandbyService: network.(servicenet.StandbyService), SN: sn, Gate: gate}
	}
	r.backup, err = replication.StartBackup(ctx, replication.BackupOptions{
		Config: r.cfg, TLS: creds, StoreDir: r.storeDir(), DurableStore: r.host.CheckpointFsync, Restorer: r.restorer, Logger: engineLogger(ctx),
		Network: network,
	})
	if err != nil {
		return fmt.Errorf("backup engine: %w", err)
	}
	return nil
}

// lowerDirs are the image's layers of the task's rootfs (the overlay's
// lowerdir): the backup restores over them with the checkpoint's writable
// layer, never needing the primary's files.
func lowerDirs(rootfs []*types.Mount) ([]string, error) {
	for _, m := range rootfs {
		for _, o := range m.Options {
			if strings.HasPrefix(o, "lowerdir=") {
				return LowerDirsFromMountOptions(o)
			}
		}
	}
	return nil, fmt.Errorf("the backup needs an overlay rootfs (image layers to restore over); got %d mounts without lowerdir", len(rootfs))
}

// backupSpec is the bundle's spec for the restore: containerd wrote it for
// this task; only the network namespace changes (the standby one).
func backupSpec(spec *specs.Spec, nsPath string) ([]byte, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	return withNetns(b, nsPath)
}
