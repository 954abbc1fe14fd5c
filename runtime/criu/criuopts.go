// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// DumpOptions are the knobs of a dump that are not taken from runc's state.
type DumpOptions struct {
	// ImagesDir is where CRIU writes the images (absolute; a tmpfs).
	ImagesDir string
	// LogLevel is CRIU's log level (0–4); the log goes to ImagesDir/dump.log.
	// runc uses 4; every line costs time inside the pause, so default 1.
	LogLevel int32
	// TCPSkipInFlight skips connections not yet accepted (in the listen
	// backlog). Without it a dump fails while clients are connecting; such a
	// client's SYN is retransmitted after a failover anyway.
	TCPSkipInFlight bool
	// ExternalTmpfs declares the container's tmpfs mounts (/dev, /dev/shm,
	// /run, masked directories) external, so that CRIU does not archive them
	// with a tar+gzip child process each, inside the pause; the
	// Checkpointer archives their content itself and Restore maps them back
	// (see tmpfsmounts.go).
	ExternalTmpfs bool
	// CgroupMode, if set, is CRIU's --manage-cgroups mode for the dump.
	// IGNORE skips dumping cgroup properties (inside the pause);
	// runc restore puts the tasks into the cgroups of the bundle's
	// config.json anyway.
	CgroupMode *rpc.CriuCgMode
	// InNetNS: CRIU runs in the container's network namespace
	// (CRIUCommand.NetNS), so that namespace is CRIU's own, not an external
	// one to map.
	InNetNS bool
	// FileSizeValidation: CRIU records the size of each file the container
	// maps or has open, not its ELF build-id, and a restore checks sizes
	// only. Reading the build-id of each mapped library costs pause time
	// (docs/CHECKPOINT.md has the figures); the files come from the same
	// image layers on both hosts. The RPC has no field for it: it goes
	// into the dump's configuration file (dumpConfigFile).
	FileSizeValidation bool
	// TrackMem: CRIU records what it needs to find out, at the next dump,
	// which pages changed since this one (--track-mem; see incremental.go).
	TrackMem bool
	// ParentImg, with TrackMem, is the full image set of the previous dump,
	// relative to ImagesDir: pages not written since are left in it.
	ParentImg string
}

// dumpConfigFile is the CRIU configuration file a dump reads from its image
// directory, for the settings the RPC has no field for.
const dumpConfigFile = "criu-dump.conf"

// dumpConfig is the content of dumpConfigFile for o; "" if o needs none.
func dumpConfig(o DumpOptions) string {
	if o.FileSizeValidation {
		return "file-validation=filesize\n"
	}
	return ""
}

// FastDumpOptions are the options for a short pause: CRIU leaves the tmpfs
// mounts and the cgroup properties to us (see ExternalTmpfs and CgroupMode),
// validates files by size (FileSizeValidation), logs errors only (at level 4
// CRIU writes its log while the container is frozen: thousands of lines for
// a Redis, a measurable part of the pause; docs/CHECKPOINT.md), and skips
// connections not yet accepted.
func FastDumpOptions() DumpOptions {
	return DumpOptions{
		LogLevel:           1,
		TCPSkipInFlight:    true,
		ExternalTmpfs:      true,
		CgroupMode:         rpc.CriuCgMode_IGNORE.Enum(),
		FileSizeValidation: true,
	}
}

// descriptorsFile is the file runc's checkpoint writes next to the images and
// runc's restore reads: the container's stdio descriptors (e.g. "pipe:[123]"),
// so that restore can attach the new stdio in their place.
const descriptorsFile = "descriptors.json"

// BuildDumpOptions returns the CRIU options for dumping the container of st
// the way runc 1.1.5's checkpoint does (libcontainer/container_linux.go,
// Checkpoint, addCriuDumpMount, addMaskPaths), so that `runc restore` can
// restore the images, with these differences, each for a short pause:
//   - leave_running and tcp_established are always on;
//   - network_lock SKIP: the project holds inbound packets itself; CRIU's
//     iptables/nftables lock drops them and costs retransmission timeouts;
//   - freeze_cgroup is the container's freezer, which we have already
//     frozen: CRIU sees it FROZEN, does not wait in 100 ms steps, and leaves
//     it frozen afterwards (we thaw);
//   - notify scripts on: the "pre-dump" notification is where we freeze.
//
// rootfsStat is used to find which masked paths are files (runc stats them
// through /proc/<pid>/root); nil means os.Stat.
func BuildDumpOptions(st *RuncState, o DumpOptions, rootfsStat func(string) (os.FileInfo, error)) (*rpc.CriuOpts, error) {
	if rootfsStat == nil {
		rootfsStat = os.Stat
	}
	if !filepath.IsAbs(o.ImagesDir) {
		return nil, fmt.Errorf("criu images dir %q is not absolute", o.ImagesDir)
	}
	freezer, _ := st.FreezerPath()
	if freezer == "" {
		return nil, fmt.Errorf("container %s has no freezer cgroup", st.ID)
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:     proto.Int32(-1),
		ImagesDir:       proto.String(o.ImagesDir),
		LogLevel:        proto.Int32(o.LogLevel),
		LogFile:         proto.String("dump.log"),
		Root:            proto.String(st.Config.Rootfs),
		ManageCgroups:   proto.Bool(true),
		Pid:             proto.Int32(int32(st.InitPid)),
		ShellJob:        proto.Bool(false),
		LeaveRunning:    proto.Bool(true),
		TcpEstablished:  proto.Bool(true),
		TcpSkipInFlight: proto.Bool(o.TCPSkipInFlight),
		ExtUnixSk:       proto.Bool(false),
		FileLocks:       proto.Bool(false),
		OrphanPtsMaster: proto.Bool(true),
		FreezeCgroup:    proto.String(freezer),
		NetworkLock:     rpc.CriuNetworkLockMethod_SKIP.Enum(),
		NotifyScripts:   proto.Bool(true),
	}
	// Namespaces the container joined by path are external to it: CRIU must
	// not dump them, and restore gets them from runc by these keys.
	for _, ns := range []struct{ typ, criu, key string }{
		{"NEWNET", "net", "extRootNetNS"},
		{"NEWPID", "pid", "extRootPidNS"},
	} {
		if ns.typ == "NEWNET" && o.InNetNS {
			continue
		}
		if own, path := st.HasNamespace(ns.typ); own && path != "" {
			var s unix.Stat_t
			if err := unix.Stat(path, &s); err != nil {
				return nil, fmt.Errorf("stat %s namespace %s: %w", ns.criu, path, err)
			}
			opts.External = append(opts.External, fmt.Sprintf("%s[%d]:%s", ns.criu, s.Ino, ns.key))
		}
	}
	addMount := func(dest, val string) {
		dest = strings.TrimPrefix(dest, st.Config.Rootfs)
		if val == "" {
			val = dest
		}
		opts.ExtMnt = append(opts.ExtMnt, &rpc.ExtMountMap{Key: proto.String(dest), Val: proto.String(val)})
	}
	userns, _ := st.HasNamespace("NEWUSER")
	for _, m := range st.Config.Mounts {
		switch m.Device {
		case "bind":
			addMount(m.Destination, "")
		case "cgroup":
			binds, err := cgroupV1Binds(m.Destination, userns)
			if err != nil {
				return nil, err
			}
			for _, d := range binds {
				addMount(d, "")
			}
		}
	}
	// Masked files are /dev/null bind mounts (masked directories are
	// read-only tmpfs and are dumped as such).
	for _, p := range st.Config.MaskPaths {
		fi, err := rootfsStat(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat masked path %s: %w", p, err)
		}
		if !fi.IsDir() {
			addMount(p, "/dev/null")
		}
	}
	for _, d := range st.Config.Devices {
		addMount(d.Path, "")
	}
	if o.ExternalTmpfs {
		for _, m := range TmpfsMounts(st, rootfsStat) {
			addMount(m.Destination, m.Key)
		}
	}
	if o.CgroupMode != nil {
		opts.ManageCgroupsMode = o.CgroupMode.Enum()
	}
	if o.TrackMem {
		opts.TrackMem = proto.Bool(true)
		if o.ParentImg != "" {
			if filepath.IsAbs(o.ParentImg) {
				return nil, fmt.Errorf("criu parent images %q: must be relative to the images dir", o.ParentImg)
			}
			opts.ParentImg = proto.String(o.ParentImg)
		}
	}
	if dumpConfig(o) != "" {
		opts.ConfigFile = proto.String(filepath.Join(o.ImagesDir, dumpConfigFile))
	}
	return opts, nil
}

// procRootStat stats path inside the container through /proc/<pid>/root, as
// runc does.
func procRootStat(pid int) func(string) (os.FileInfo, error) {
	return func(p string) (os.FileInfo, error) {
		return os.Stat(fmt.Sprintf("/proc/%d/root/%s", pid, p))
	}
}
