// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"github.com/iorrc/rrc/netfilter"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/shim/settings"
	"github.com/iorrc/rrc/shim/status"
)

// replica is one replicated container in this shim: its settings, its
// service network and its engine (primary or backup), and everything to
// remove on delete (invariant 6 of docs/ARCHITECTURE.md). The shim hands
// the engine the network namespace path; packets are the engine's business.
type replica struct {
	id, ns string
	cfg    replication.Config
	host   settings.Config
	// ctx is for work that outlives a request (engine, status, exits): it
	// carries the namespace and the container id's logger, and is never
	// cancelled.
	ctx      context.Context
	bundle   string
	runcRoot string // runc --root of the task, as the runc service uses it

	netnsDir string // per-container servicenet dir (a shared bind mount)
	// hooksNetns: the spec's hooks made the network (netnsHooks); a
	// standby deleted unrestored runs their poststop ones itself.
	hooksNetns bool
	sn         *servicenet.ServiceNetwork
	workDir    string // work/<ns>/<id> under the state_dir setting: what the backup's restore prepares
	unmount    func() error

	primary *replication.Primary // set at create, or later by protect: read it with primaryEngine
	backup  *replication.Backup
	// fence is the pair's ownership in the host's witness (zero when
	// unfenced).
	fence EtcdFence
	// hold is the backup's promotion hold in the gate namespace
	// (HeldStandby); after a failover it passes the new primary's traffic.
	hold    *netfilter.Path
	standby *standbyTask // the backup's placeholder task
	// restoreCache is the backup's CRIU kernel-feature cache.
	restoreCache *restoreCache

	status *status.Publisher
	// events publishes the engine's changes of state on containerd's bus.
	events *replicationEvents

	mu        sync.Mutex
	stopStart context.CancelFunc // ends the primary's connect loop
	startDone chan struct{}
	startErr  string        // last reason the primary is not replicating yet
	closed    chan struct{} // closed by close: background watchers end
	closeOnce sync.Once
	closeErr  error
}

func newReplica(ns, id string, cfg replication.Config, host settings.Config) *replica {
	return &replica{
		id: id, ns: ns, cfg: cfg, host: host,
		netnsDir: filepath.Join(host.StateDir, "netns", ns, id),
		workDir:  filepath.Join(host.StateDir, "work", ns, id),
		closed:   make(chan struct{}),
	}
}

// serviceNetwork creates (standby on the backup) or adopts the container's
// network namespace according to plan.
func (r *replica) serviceNetwork(ctx context.Context, plan netnsPlan, adoptPath string) error {
	opts := servicenet.Options{Dir: r.netnsDir, Logger: engineLogger(ctx)}
	standby := r.cfg.Role == replication.RoleBackup
	var err error
	switch plan {
	case netnsCreate:
		r.sn, err = servicenet.Create(ctx, r.id, *r.cfg.Service, standby, opts)
	case netnsAdopt:
		r.sn, err = servicenet.Adopt(ctx, adoptPath, standby, opts)
	case netnsHooks:
		r.sn, err = servicenet.NewEmpty(ctx, r.id, opts)
		r.hooksNetns = true
	}
	if err != nil {
		return fmt.Errorf("service network: %w", err)
	}
	log.G(ctx).WithField("netns", r.sn.NetnsPath()).WithField("standby", standby).Info("service network ready")
	return nil
}

// gate makes the primary's engine: from its return every packet the
// container sends is held, so it runs after runc create and before start.
func (r *replica) gate(ctx context.Context, creds *peertls.Credentials) error {
	if err := r.openFence(ctx); err != nil {
		return err
	}
	var err error
	r.primary, err = r.newPrimary(ctx, r.cfg, creds)
	return err
}

// newPrimary mounts the image tmpfs and makes the primary's engine with
// cfg: from its return every packet the container sends is held.
func (r *replica) newPrimary(ctx context.Context, cfg replication.Config, creds *peertls.Credentials) (*replication.Primary, error) {
	images := r.imagesDir()
	// Two images live there at once (the one being taken and the one the
	// next delta is computed against), each the size of the container's
	// memory: no fixed limit below the kernel's default (half the RAM),
	// which is a bound, not a reservation.
	unmount, err := criu.MountImageTmpfs(images, 0)
	if err != nil {
		return nil, fmt.Errorf("image tmpfs: %w", err)
	}
	r.unmount = unmount
	packets := &netfilter.Path{NetNS: r.sn.NetnsPath(), Launcher: reaperLauncher(), Logger: engineLogger(ctx)}
	if g, ok := r.sn.Gate(); ok {
		packets.Forward = &netfilter.Forward{NetNS: g.NetNS, Inner: g.InnerIf, Uplink: g.Uplink}
	}
	return replication.NewPrimary(ctx, replication.PrimaryOptions{
		Config: cfg, TLS: creds, WorkDir: filepath.Join(images, "epochs"), Logger: engineLogger(ctx),
		Packets: replication.NetfilterPath(packets), OnTransition: r.onTransition(), Fence: r.engineFence(),
	})
}

// onTransition is the engines' OnTransition: nil without events.
func (r *replica) onTransition() func(replication.Transition) {
	if r.events == nil {
		return nil
	}
	return r.events.notify
}

// replicate starts the primary's epoch loop once the container runs. It
// returns at once: connecting to the backup is retried in the background
// while the output stays held (fail closed), so that `ctr run` does not
// hang on an unreachable backup; the status says why it waits.
func (r *replica) replicate(ctx context.Context, runcRoot string) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	r.stopStart, r.startDone = cancel, make(chan struct{})
	r.mu.Unlock()
	go func() {
		defer close(r.startDone)
		backoff := 200 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := r.startPrimary(ctx, runcRoot)
			if err == nil {
				r.setStartErr("")
				return
			}
			r.setStartErr(err.Error())
			log.G(ctx).WithError(err).WithField("attempt", attempt).Warn("replication not started yet; output stays held, retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// checkpointer is the primary's checkpointer of the running container.
func (r *replica) checkpointer(ctx context.Context, runcRoot string) (*criu.Checkpointer, error) {
	ck, err := criu.NewCheckpointer(ctx, criu.CheckpointerConfig{
		RuncRoot: runcRoot, ID: r.id,
		CRIU:              criu.CRIUCommand{Launcher: reaperLauncher(), Nice: r.host.CRIUNice, NetNS: r.sn.NetnsPath()},
		Dump:              criu.FastDumpOptions(),
		CaptureRootfsDiff: true, PrepareNext: true, Memory: r.memoryTracking(), Log: engineLogger(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("checkpointer: %w", err)
	}
	return ck, nil
}

func (r *replica) startPrimary(ctx context.Context, runcRoot string) error {
	ck, err := r.checkpointer(ctx, runcRoot)
	if err != nil {
		return err
	}
	if err := r.primary.Start(ctx, ck); err != nil {
		ck.Close()
		return err
	}
	return nil
}

func (r *replica) setStartErr(s string) {
	r.mu.Lock()
	r.startErr = s
	r.mu.Unlock()
	if r.status != nil {
		r.status.Kick()
	}
}

// engineStatus is the engine's status, with the reason the primary is not
// replicating yet when it is still connecting.
func (r *replica) engineStatus() replication.Status {
	var st replication.Status
	primary := r.primaryEngine()
	switch {
	case primary != nil:
		st = primary.Status()
		r.mu.Lock()
		if st.State == replication.StateStarting && r.startErr != "" {
			st.Reason = "output held (fail closed) while waiting for the backup: " + r.startErr
		}
		r.mu.Unlock()
		if r.backup != nil { // protecting what a failover restored: its story stays
			st.Failover = r.backup.Status().Failover
		}
	case r.backup != nil:
		st = r.backup.Status()
	default:
		st = replication.Status{Pair: r.cfg.Pair, Role: r.cfg.Role, State: replication.StateStarting}
	}
	return st
}

func (r *replica) publishStatus(ctx context.Context) error {
	base := status.Published{ID: r.id, Namespace: r.ns, ShimPid: os.Getpid()}
	if r.sn != nil {
		base.Netns = r.sn.NetnsPath()
	}
	p, err := status.StartPublisher(ctx, status.File(r.host.StateDir, r.ns, r.id), base, time.Second, r.engineStatus)
	if err != nil {
		return fmt.Errorf("status file: %w", err)
	}
	r.status = p
	return nil
}

// primaryEngine is the primary's engine: the one made at create, or the
// one protect made for what a failover restored; nil if none.
func (r *replica) primaryEngine() *replication.Primary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.primary
}

// stopPrimary ends a primary's replication on purpose (a goodbye: its
// backup does not take over) and leaves the rest to close. A start still
// being retried is stopped first.
func (r *replica) stopPrimary(ctx context.Context, why replication.StopReason, message string) {
	primary := r.primaryEngine()
	if primary == nil {
		return
	}
	r.stopStarting()
	if err := primary.Stop(ctx, why, message); err != nil {
		log.G(ctx).WithError(err).Warn("stopping replication")
	}
}

// stopStarting stops a start of the primary's replication still being
// retried, and waits for it, so that it cannot start the engine again.
func (r *replica) stopStarting() {
	r.mu.Lock()
	stop, done := r.stopStart, r.startDone
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// close removes everything the replica made, in reverse order; idempotent.
// why is told to the backup of a primary (a goodbye): it does not take
// over a container stopped on purpose.
func (r *replica) close(ctx context.Context, why replication.StopReason) error {
	r.closeOnce.Do(func() {
		close(r.closed)
		var errs []error
		r.stopStarting()
		r.restoreCache.wait() // it runs in the service namespace, and writes to the work dir
		if primary := r.primaryEngine(); primary != nil {
			if err := primary.Stop(ctx, why, fmt.Sprintf("container %s stopped on purpose (%s)", r.id, why)); err != nil {
				errs = append(errs, fmt.Errorf("closing primary engine: %w", err))
			}
		}
		if r.backup != nil {
			if err := r.backup.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("closing backup engine: %w", err))
			}
		}
		if err := r.closeFence(ctx); err != nil {
			errs = append(errs, err)
		}
		if r.events != nil {
			r.events.close()
		}
		if r.unmount != nil {
			if err := r.unmount(); err != nil {
				errs = append(errs, fmt.Errorf("unmounting image tmpfs: %w", err))
			} else if err := os.Remove(r.imagesDir()); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("removing image dir: %w", err))
			}
		}
		if r.hold != nil {
			if err := r.hold.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("closing promotion hold: %w", err))
			}
		}
		if r.sn != nil {
			if err := r.sn.Remove(ctx); err != nil {
				errs = append(errs, fmt.Errorf("removing service network: %w", err))
			}
		}
		if _, err := os.Stat(r.netnsDir); err == nil {
			if err := servicenet.ReleaseDir(r.netnsDir); err != nil {
				errs = append(errs, err)
			} else if err := os.Remove(r.netnsDir); err != nil {
				errs = append(errs, fmt.Errorf("removing service network dir: %w", err))
			}
		}
		if err := os.RemoveAll(r.workDir); err != nil {
			errs = append(errs, fmt.Errorf("removing work dir: %w", err))
		}
		if r.backup != nil {
			if err := os.RemoveAll(r.storeDir()); err != nil {
				errs = append(errs, fmt.Errorf("removing checkpoint store: %w", err))
			}
		}
		if r.status != nil {
			if err := r.status.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		r.closeErr = errors.Join(errs...)
		if r.closeErr != nil {
			log.G(ctx).WithError(r.closeErr).Error("replication cleanup incomplete")
		} else {
			log.G(ctx).Info("replication stopped; nothing left behind")
		}
	})
	return r.closeErr
}

// memoryTracking is the host's setting, with CRIU's kernel-feature cache
// on the container's image tmpfs (gone with it on delete, and at a reboot).
func (r *replica) memoryTracking() *criu.MemoryTracking {
	m := r.host.MemoryTracking()
	if m != nil {
		m.KernelCache = filepath.Join(r.imagesDir(), "criu.kdat")
	}
	return m
}

// imagesDir gets a tmpfs of its own per container: each epoch's images
// are written once and read once, a memory copy.
func (r *replica) imagesDir() string {
	return filepath.Join(r.host.ImageDir, r.ns, r.id)
}

func (r *replica) storeDir() string {
	return filepath.Join(r.host.CheckpointDir, r.ns, r.cfg.Pair)
}
