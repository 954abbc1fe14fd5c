// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// RestoreConfig says how to restore a checkpoint with `runc restore`.
type RestoreConfig struct {
	// RuncArgv is the command up to and excluding runc's global options,
	// default ["runc"]. Prefix it with "nsenter --net=PATH" to restore a
	// container that shared its host's network namespace (--net-host) into
	// that namespace: the restored tasks join the namespace runc and CRIU
	// run in.
	RuncArgv []string
	// RuncRoot is runc's --root for the restored container.
	RuncRoot string
	// ID of the restored container.
	ID string
	// Bundle is the OCI bundle: config.json and the rootfs it names, with
	// the writable layer as of the checkpoint (see PrepareRestoreRootfs).
	Bundle string
	// ImagesDir is the checkpoint directory.
	ImagesDir string
	// WorkDir receives restore.log and the pid file, and holds the tmpfs
	// mounts of a checkpoint taken with DumpOptions.ExternalTmpfs until the
	// restore has bind-mounted them; default ImagesDir.
	WorkDir string
	// Stdio: files that become the restored container's stdin, stdout and
	// stderr (runc maps them over the pipes named in descriptors.json).
	// Default /dev/null. They must be *os.File: the restored process keeps
	// them open forever, so a Go copy goroutine would never finish.
	Stdin, Stdout, Stderr *os.File
	Launcher              launch.Launcher
	// NetNS is the network namespace the container is restored into; when
	// set, the TCP metrics of the checkpoint's peers are primed there
	// first, so that the restored connections retransmit after 200 ms
	// rather than 1-3 s (PrimeTCPMetrics).
	NetNS string
	// Env is added to runc's environment, which CRIU inherits (e.g.
	// KernelCache.Env).
	Env []string
	// Logger receives every log line of Restore (with the attribute
	// "container" = ID added); default slog.Default().
	Logger *slog.Logger
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Pid      int           // init pid of the restored container
	Duration time.Duration // runc restore start → exit
}

// Restore runs `runc restore --detach --tcp-established` and returns the
// restored init's pid. runc reads descriptors.json from the image directory,
// re-creates the cgroups of the bundle's config.json and drives CRIU with
// the configuration PrepareRestoreBundle writes.
func Restore(ctx context.Context, cfg RestoreConfig) (RestoreResult, error) {
	var res RestoreResult
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("container", cfg.ID)
	work := cfg.WorkDir
	if work == "" {
		work = cfg.ImagesDir
	}
	pidFile := filepath.Join(work, "restore.pid")
	prep, err := PrepareRestoreBundle(RestoreBundleConfig{Bundle: cfg.Bundle, ImagesDir: cfg.ImagesDir, WorkDir: work})
	if err != nil {
		return res, fmt.Errorf("restore %s: %w", cfg.ID, err)
	}
	defer func() {
		if err := prep.Release(); err != nil {
			log.Warn("release what the restore prepared", "err", err)
		}
	}()
	if cfg.NetNS != "" {
		PrimeRestoredConnections(cfg.NetNS, cfg.ImagesDir, log)
	}
	l := cfg.Launcher
	if l == nil {
		l = launch.OS{}
	}
	argv := cfg.RuncArgv
	if len(argv) == 0 {
		argv = []string{"runc"}
	}
	args := append(append([]string{}, argv[1:]...),
		"--root", cfg.RuncRoot, "restore",
		"--image-path", cfg.ImagesDir, "--work-path", work,
		"--bundle", cfg.Bundle, "--detach", "--tcp-established",
		"--pid-file", pidFile, cfg.ID)
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return res, fmt.Errorf("restore %s: %w", cfg.ID, err)
	}
	defer devNull.Close()
	// runc's own messages go to a file too, never to a pipe we would read.
	out, err := os.CreateTemp(work, "runc-restore-*.out")
	if err != nil {
		return res, fmt.Errorf("restore %s: output file: %w", cfg.ID, err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, argv[0], args...)
	if len(cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), cfg.Env...)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orFile(cfg.Stdin, devNull), orFile(cfg.Stdout, out), orFile(cfg.Stderr, out)
	start := time.Now()
	wait, err := l.Start(cmd)
	if err != nil {
		return res, fmt.Errorf("restore %s: start runc: %w", cfg.ID, err)
	}
	status, err := wait()
	res.Duration = time.Since(start)
	if err == nil && status != 0 {
		msg, _ := os.ReadFile(out.Name())
		err = fmt.Errorf("runc restore exit status %d: %s; restore.log: %s", status, launch.Tail(string(msg), 1000), CRIULogErrors(filepath.Join(work, "restore.log")))
	}
	if err != nil {
		return res, fmt.Errorf("restore %s: %w", cfg.ID, err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return res, fmt.Errorf("restore %s: read pid file: %w", cfg.ID, err)
	}
	if res.Pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return res, fmt.Errorf("restore %s: pid file: %w", cfg.ID, err)
	}
	return res, nil
}

func orFile(f, def *os.File) *os.File {
	if f != nil {
		return f
	}
	return def
}

// criuErrors keeps the lines of a CRIU log that say what went wrong.
func criuErrors(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "Warn") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// PrepareRestoreRootfs mounts at target a fresh overlay over lower (the
// image's layers, top first) whose upper directory upper (created, must be
// empty) receives the checkpoint's writable layer (rootfs-diff.tar in
// imagesDir, if present); work is overlay's work directory (created, same
// file system as upper). The returned function unmounts it.
func PrepareRestoreRootfs(target string, lower []string, upper, work, imagesDir string) (unmount func() error, err error) {
	for _, d := range []string{target, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("prepare restore rootfs: %w", err)
		}
	}
	diff := filepath.Join(imagesDir, RootfsDiffFile)
	if _, err := os.Stat(diff); err == nil {
		if err := ApplyRootfsDiff(diff, upper); err != nil {
			return nil, fmt.Errorf("prepare restore rootfs: %w", err)
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return nil, fmt.Errorf("prepare restore rootfs: mount overlay at %s: %w", target, err)
	}
	return func() error {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount restore rootfs %s: %w", target, err)
		}
		return nil
	}, nil
}

// WriteRestoreSpec writes the OCI spec of a restore bundle at path: spec
// (the container's config.json) with root.path "rootfs" (the bundle's own
// rootfs) and, if set, the restored container's cgroup path.
func WriteRestoreSpec(path string, spec []byte, cgroupsPath string) error {
	var s map[string]any
	if err := json.Unmarshal(spec, &s); err != nil {
		return fmt.Errorf("restore spec: %w", err)
	}
	s["root"] = map[string]any{"path": "rootfs"}
	if cgroupsPath != "" {
		linux, _ := s["linux"].(map[string]any)
		if linux == nil {
			return errors.New("restore spec: no linux section")
		}
		linux["cgroupsPath"] = cgroupsPath
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("restore spec: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing restore spec: %w", err)
	}
	return nil
}
