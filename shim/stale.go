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
	"strings"
	"time"

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
// image tmpfs, a restored container, work dirs, checkpoints and the status
// file. After a normal delete there is nothing left and this finds nothing.
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
	if err != nil || !cfg.Enabled() {
		// Annotations create refused: the shim never replicated it.
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
	// A container restored by a promotion: runc state under our root. A
	// runc restore killed half-way (the shim died during a promotion) leaves
	// its bind mount of the rootfs at criu-root, which runc delete cannot
	// remove.
	if st := filepath.Join(r.host.StateDir, "runc", r.ns, r.id); dirExists(st) {
		if err := unix.Unmount(filepath.Join(st, "criu-root"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount runc's criu-root: %w", err))
		}
		out, err := exec.CommandContext(ctx, "runc", "--root", filepath.Join(r.host.StateDir, "runc", r.ns), "delete", "-f", r.id).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("runc delete of the restored container: %v: %s", err, out))
		}
	}
	for _, mp := range []string{filepath.Join(r.workDir, "restore", "bundle", "rootfs"), r.imagesDir()} {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
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

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
