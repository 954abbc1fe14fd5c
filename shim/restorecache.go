// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/iorrc/rrc/runtime/criu"
)

// restoreCache is the backup's CRIU kernel-feature cache: written in the
// background when the backup starts, in its standby namespace, so that the
// restore at a failover loads it instead of probing the kernel
// (docs/CHECKPOINT.md, "The restore's kernel probing").
type restoreCache struct {
	cache criu.KernelCache
	done  chan struct{}
	err   error
}

// warmTimeout bounds the writing of the cache: a CRIU that hangs must not
// keep the replica's removal waiting.
const warmTimeout = 30 * time.Second

// warmRestoreCache starts writing the cache on a small tmpfs at the
// container's image dir (CRIU keeps the cache only on a tmpfs; the primary
// keeps its own there too), removed with the replica. Nil if the host has no
// criu-written library or the tmpfs cannot be mounted: the restore then
// probes, as CRIU does.
func warmRestoreCache(ctx context.Context, rep *replica) *restoreCache {
	if rep.host.CRIUWrittenLib == "" {
		return nil
	}
	unmount, err := criu.MountImageTmpfs(rep.imagesDir(), cacheTmpfsSize)
	if err != nil {
		log.G(ctx).WithError(err).Warn("no tmpfs for CRIU's kernel-feature cache: a failover will probe the kernel")
		return nil
	}
	rep.unmount = unmount
	c := &restoreCache{
		cache: criu.KernelCache{Preload: rep.host.CRIUWrittenLib, File: filepath.Join(rep.imagesDir(), "criu.kdat")},
		done:  make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		ctx, cancel := context.WithTimeout(ctx, warmTimeout)
		defer cancel()
		start := time.Now()
		if c.err = c.cache.Warm(ctx, criu.CRIUCommand{NetNS: rep.sn.NetnsPath(), Launcher: reaperLauncher()}); c.err != nil {
			log.G(ctx).WithError(c.err).Warn("CRIU's kernel-feature cache for the restore not written: a failover will probe the kernel")
			return
		}
		log.G(ctx).WithField("took", time.Since(start).Round(time.Millisecond)).Debug("CRIU's kernel-feature cache for the restore written")
	}()
	return c
}

// cacheTmpfsSize bounds the backup's image tmpfs, which holds only the
// cache (about a kilobyte).
const cacheTmpfsSize = 1 << 20

// env is what runc's environment needs for the restore to use the cache:
// nothing if there is none, or it is not written yet (a failover right
// after the backup started does not wait for it).
func (c *restoreCache) env() []string {
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		if c.err == nil {
			return c.cache.Env()
		}
	default:
	}
	return nil
}

// wait returns once the cache is written or given up.
func (c *restoreCache) wait() {
	if c != nil {
		<-c.done
	}
}

// withEnv runs fn with vars (KEY=VALUE) in the shim's environment, then
// puts back what was there. The runc task service starts runc with the
// shim's own environment and has no other way to hand runc, and through
// it CRIU, a variable; calls are serialized by s.envMu. Other runc calls
// of this shim in the meantime see the variables too, which for the
// kernel-feature cache only changes where a CRIU they start keeps it.
func (s *TaskService) withEnv(vars []string, fn func() error) error {
	if len(vars) == 0 {
		return fn()
	}
	s.envMu.Lock()
	defer s.envMu.Unlock()
	for _, kv := range vars {
		k, v, _ := strings.Cut(kv, "=")
		old, had := os.LookupEnv(k)
		if err := os.Setenv(k, v); err != nil {
			return err
		}
		defer func() {
			if had {
				_ = os.Setenv(k, old)
			} else {
				_ = os.Unsetenv(k)
			}
		}()
	}
	return fn()
}
