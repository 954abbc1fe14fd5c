// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package criu holds what touches a replicated container's processes
// directly: CRIU checkpoint and restore, cgroup freeze and thaw, the
// writable layer's changes and the tmpfs mounts. It is driven by the
// replication engine and knows nothing of containerd.
//
// # Checkpoint and restore
//
// A Checkpointer checkpoints one running runc container (as created by
// containerd's runc shim; it reads runc's state.json) again and again with
// --leave-running, for the epoch loop:
//
//	c, err := criu.NewCheckpointer(ctx, criu.CheckpointerConfig{
//		RuncRoot: "/run/containerd/runc/" + namespace, ID: id,
//		CRIU:     criu.CRIUCommand{Launcher: reaperLauncher},
//		Dump:     criu.FastDumpOptions(),
//		CaptureRootfsDiff: true,
//	})
//	defer c.Close()
//	stats, err := c.Checkpoint(ctx, "/run/.../images/epoch-42") // on a tmpfs
//
// The pause is kept short by (docs/CHECKPOINT.md has the figures):
//   - a CRIU service process (criu swrk) started ahead of time, one per dump
//     (CRIU 4.2.1 serves one dump per swrk process), replaced in the
//     background after each thaw (CRIUService);
//   - freezing the cgroup ourselves with fine-grained polling (Freezer) on
//     CRIU's "pre-dump" notification, i.e. after CRIU's own start-up and
//     just before it seizes the tasks; CRIU finds the cgroup frozen and
//     does not poll it in 100 ms steps; we thaw as soon as it answers;
//   - no CRIU network lock (network_lock SKIP): the project holds inbound
//     packets itself;
//   - tmpfs mounts and cgroup properties left out of CRIU's dump
//     (FastDumpOptions): CRIU archives each tmpfs with a tar+gzip child and
//     dumps cgroup properties, both inside the pause; the Checkpointer
//     archives the tmpfs contents in process, and Restore hands them back to
//     CRIU as external mounts through a CRIU configuration file;
//   - the writable layer (overlay upperdir) archived in process while frozen
//     (rootfs-diff.tar).
//
// The image directory is what `runc checkpoint` writes (plus
// rootfs-diff.tar, the tmpfs archives and rrc-checkpoint.json), and Restore
// restores it with `runc restore --detach --tcp-established` into a fresh
// bundle (PrepareRestoreRootfs builds its overlay rootfs).
//
// Helper processes (criu, runc) are started through a launch.Launcher: the
// shim is a subreaper and must supply one built on containerd's reaper;
// tests use launch.OS.
package criu
