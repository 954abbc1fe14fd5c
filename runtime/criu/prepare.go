// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
)

// Each CRIU dump begins with tens of milliseconds of CRIU's own start-up
// (kernel feature probing, vDSO and cgroup parsing) before it touches the
// tasks; the freeze waits for its "pre-dump" notification, so the container
// runs meanwhile, but the checkpoint as a whole, and the output waiting for
// it, takes that much longer. With PrepareNext the Checkpointer asks for the
// next dump as soon as one is over: CRIU starts up between checkpoints and
// waits at "pre-dump" (it has not looked at the tasks yet, so nothing it
// knows can go stale), into a directory of its own next to the last one,
// which the next checkpoint renames to the directory it is asked for once
// CRIU has answered (by then CRIU holds the directory open, not its name; it
// opens it by name a little after the request, so not before).

// nextDump is the prepared next dump.
type nextDump struct {
	mu        sync.Mutex
	preparing chan struct{} // closed when the preparation in progress is over
	dir       string
	parent    string // the parent image it was asked for with ("" = full)
	dump      *PreparedDump
	closed    bool
}

// prepare writes what a dump into dir needs and asks CRIU for it, as an
// incremental dump over parent (a full image set) unless parent is "".
func (c *Checkpointer) prepare(ctx context.Context, dir, parent string) (*PreparedDump, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	// Everything that does not need the container stopped is done first.
	if err := writeDescriptors(dir, c.state.ExternalDescriptors); err != nil {
		return nil, err
	}
	do := c.cfg.Dump
	do.ImagesDir = dir
	if parent != "" {
		rel, err := filepath.Rel(dir, parent)
		if err != nil {
			return nil, fmt.Errorf("parent images relative to %s: %w", dir, err)
		}
		do.ParentImg = rel
	}
	man := checkpointManifest{
		Tmpfs:              c.tmpfs,
		CgroupsIgnored:     do.CgroupMode != nil && *do.CgroupMode == rpc.CriuCgMode_IGNORE,
		FileSizeValidation: do.FileSizeValidation,
	}
	if len(man.Tmpfs) > 0 || man.CgroupsIgnored || man.FileSizeValidation {
		if err := writeManifest(dir, man); err != nil {
			return nil, err
		}
	}
	if conf := dumpConfig(do); conf != "" {
		if err := os.WriteFile(filepath.Join(dir, dumpConfigFile), []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", dumpConfigFile, err)
		}
	}
	opts, err := BuildDumpOptions(c.state, do, procRootStat(c.state.InitPid))
	if err != nil {
		return nil, fmt.Errorf("build criu options: %w", err)
	}
	return c.criu.Prepare(ctx, opts)
}

// prepareNext prepares the next dump in the background, in a new directory
// under dir, over the parent image parent ("" = full dump).
func (c *Checkpointer) prepareNext(dir, parent string) {
	if !c.cfg.PrepareNext {
		return
	}
	n := &c.next
	n.mu.Lock()
	if n.closed || n.preparing != nil || n.dump != nil {
		n.mu.Unlock()
		return
	}
	done := make(chan struct{})
	n.preparing = done
	n.mu.Unlock()
	go func() {
		defer close(done)
		dir, err := os.MkdirTemp(dir, ".next-")
		var d *PreparedDump
		if err == nil {
			if d, err = c.prepare(context.Background(), dir, parent); err != nil {
				os.RemoveAll(dir)
			}
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		n.preparing = nil
		if err != nil {
			c.log.Warn("preparing the next dump; it will start when it is wanted", "err", err)
			return
		}
		if n.closed {
			go func() { d.Cancel(); os.RemoveAll(dir) }()
			return
		}
		n.dir, n.parent, n.dump = dir, parent, d
	}()
}

// takePrepared returns the prepared dump, its directory renamed to dir, or
// nil if there is none to use (then the caller prepares one now): also one
// asked for with another parent image than parent.
func (c *Checkpointer) takePrepared(dir, parent string) *PreparedDump {
	n := &c.next
	n.mu.Lock()
	preparing := n.preparing
	n.mu.Unlock()
	if preparing != nil {
		<-preparing // asked for right after the last checkpoint: soon done
	}
	n.mu.Lock()
	d, from, asked := n.dump, n.dir, n.parent
	n.dump, n.dir, n.parent = nil, "", ""
	n.mu.Unlock()
	if d == nil {
		return nil
	}
	if filepath.Dir(from) == filepath.Dir(dir) && asked == parent {
		// CRIU opens the images directory by name some time after the
		// request: not renamed before it has answered.
		<-d.Ready()
		// dir may exist, empty (the caller made it); rename replaces it.
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(from, dir); err == nil {
				return d
			}
		}
	}
	// Elsewhere, or dir holds something: not ours to replace.
	d.Cancel()
	os.RemoveAll(from)
	return nil
}

// dropPrepared ends the prepared dump and stops preparing more.
func (c *Checkpointer) dropPrepared() {
	n := &c.next
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	c.cancelPrepared()
}

// cancelPrepared ends the prepared dump, if any (e.g. one of a CRIU
// service being replaced); later ones may be prepared again.
func (c *Checkpointer) cancelPrepared() {
	n := &c.next
	n.mu.Lock()
	preparing := n.preparing
	n.mu.Unlock()
	if preparing != nil {
		<-preparing
	}
	n.mu.Lock()
	d, dir := n.dump, n.dir
	n.dump, n.dir = nil, ""
	n.mu.Unlock()
	if d != nil {
		d.Cancel()
		os.RemoveAll(dir)
	}
}
