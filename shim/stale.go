// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/shim/settings"
	"github.com/iorrc/rrc/shim/status"
)

// Stop is `containerd-shim-rrc-v1 delete`, which containerd runs after a
// shim has gone away (killed, crashed, or after a normal shutdown). Beyond
// the runc manager's cleanup it removes what a dead shim of a replicated
// container left (invariant 6 of docs/ARCHITECTURE.md): service network,
// image tmpfs, what a restore cut short left, work dirs, checkpoints and
// the status file. After a normal delete there is nothing left and this
// finds nothing.
func (m *Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	address := shimAddress() // before the runc manager tidies the bundle
	st, err := m.Shim.Stop(ctx, id)
	if cerr := cleanupDeadReplica(ctx, id); cerr != nil {
		log.G(ctx).WithField("id", id).WithError(cerr).Warn("removing what a dead shim of a replicated container left")
	}
	if removed, serr := removeDeadSocket(address); serr != nil {
		log.G(ctx).WithField("id", id).WithError(serr).Warn("removing a dead shim's socket")
	} else if removed {
		log.G(ctx).WithField("id", id).WithField("socket", address).Info("removed a dead shim's socket")
	}
	return st, err
}

// shimAddress is the address the task's shim served, from the bundle (the
// working directory of delete): containerd 2 records it in bootstrap.json,
// older versions in a file named address.
func shimAddress() string {
	if b, err := os.ReadFile("bootstrap.json"); err == nil {
		var p struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(b, &p) == nil && p.Address != "" {
			return p.Address
		}
	}
	a, _ := shim.ReadAddress("address")
	return a
}

// removeDeadSocket removes the shim socket at address if nobody listens on
// it. The shim library removes its socket only when the shim exits normally;
// a killed shim leaves it in /run/containerd/s (upstream notes the leak).
// A socket someone still serves (a shim shared by a pod) is left alone.
func removeDeadSocket(address string) (bool, error) {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok || path == "" {
		return false, nil // none recorded, or abstract: nothing on disk
	}
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	switch {
	case err == nil:
		c.Close()
		return false, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case !errors.Is(err, unix.ECONNREFUSED):
		return false, fmt.Errorf("probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// cleanupDeadReplica runs in the `delete` process, whose working directory
// is the task's bundle. Containers without io.rrc.* annotations never read
// the configuration.
func cleanupDeadReplica(ctx context.Context, id string) error {
	bundle, err := os.Getwd()
	if err != nil {
		return err
	}
	spec, err := readSpec(bundle)
	if err != nil {
		return nil //nolint:nilerr // no bundle left: nothing of ours to find from here
	}
	cfg, err := settings.ParseAnnotations(id, spec.Annotations)
	if err != nil || !cfg.Enabled() || settings.IsCRISandbox(spec.Annotations) {
		// Annotations create refused, or a pod sandbox: the shim never
		// replicated it.
		return nil //nolint:nilerr // not replicated: nothing of ours to clean
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	host, err := settings.LoadConfig(settings.ConfigPath())
	if err != nil {
		return err
	}
	r := newReplica(ns, id, *cfg, host)
	opts, err := runc.ReadOptions(bundle)
	if err != nil {
		return fmt.Errorf("runc options of the bundle: %w", err)
	}
	r.runcRoot = runcRootOf(ns, opts)
	return r.removeStale(ctx)
}

// removeStale removes, without the engine, what a replica's shim made.
func (r *replica) removeStale(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat(r.netnsDir); err == nil {
		removed, err := servicenet.CleanupStale(ctx, r.netnsDir, engineLogger(ctx))
		if err != nil {
			errs = append(errs, err)
		}
		if len(removed) > 0 {
			log.G(ctx).WithField("id", r.id).WithField("netns", removed).Info("stale service network removed")
		}
		if err := servicenet.ReleaseDir(r.netnsDir); err != nil {
			errs = append(errs, err)
		} else if err := os.Remove(r.netnsDir); err != nil {
			errs = append(errs, err)
		}
	}
	// A container restored by a promotion is the task's runc container,
	// which the runc manager's cleanup deletes, unless a runc restore was
	// killed half-way (the shim died during a promotion): its bind mount of
	// the rootfs at criu-root makes runc delete fail.
	if st := filepath.Join(r.runcRoot, r.id); r.runcRoot != "" && dirExists(st) {
		if err := unix.Unmount(filepath.Join(st, "criu-root"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount runc's criu-root: %w", err))
		}
		out, err := exec.CommandContext(ctx, "runc", "--root", r.runcRoot, "delete", "-f", r.id).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("runc delete of the restored container: %v: %s", err, out))
		}
	}
	// What a restore cut short left mounted: tmpfs mounts and namespace
	// files it prepared for CRIU.
	if err := unmountUnder(r.workDir); err != nil {
		errs = append(errs, err)
	}
	if err := unix.Unmount(r.imagesDir(), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", r.imagesDir(), err))
	}
	if err := os.Remove(r.imagesDir()); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	for _, d := range []string{r.workDir, r.storeDirIfBackup()} {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	status := status.File(r.host.StateDir, r.ns, r.id)
	for _, f := range []string{status, status + ".tmp"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *replica) storeDirIfBackup() string {
	if r.cfg.Role != replication.RoleBackup {
		return ""
	}
	return r.storeDir()
}

// unmountUnder unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		// id parent maj:min root mountpoint ...
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
