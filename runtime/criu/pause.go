// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// pause is one checkpoint's freeze, dump and thaw: what CRIU's
// notification, its answer and the thaw share. CRIU spends tens of
// milliseconds per request on its own start (kernel feature probing,
// cgroup and vDSO parsing) before it touches the tasks; it announces the
// moment it is about to seize them (freezeAt) and waits for our answer:
// that is when we freeze, so the container runs during CRIU's start.
// Every method runs on the goroutine of CheckpointWithHooks.
type pause struct {
	c        *Checkpointer
	ctx      context.Context
	dir      string
	hooks    CheckpointHooks
	freezeAt string // the notification to freeze at
	st       CheckpointStats

	called        time.Time // CheckpointWithHooks was called
	start, frozen time.Time
	notified      bool // BeforeFreeze called
	isFrozen      bool // the freeze succeeded
	thawed        bool // the thaw was attempted
	thawedHook    bool // Thawed called
	reset         bool // the write tracking was reset after a good dump
	files         chan filesResult
	frozeErr      error
	ipcErr        error
	diffErr       error
	thawErr       error
}

// onNotify freezes the container at freezeAt, checks the IPC namespace and
// starts the archives of the files CRIU leaves alone, which need the
// container frozen but not CRIU, so they are written while CRIU dumps.
func (p *pause) onNotify(script string) error {
	if script != p.freezeAt || p.notified {
		return nil
	}
	p.notified = true
	callHook(p.hooks.BeforeFreeze)
	p.start = time.Now()
	p.st.Wait = p.start.Sub(p.called)
	if p.frozeErr = p.c.freezer.Freeze(p.ctx); p.frozeErr != nil {
		return p.frozeErr
	}
	p.isFrozen = true
	p.frozen = time.Now()
	p.st.Freeze = p.frozen.Sub(p.start)
	if p.ipcErr = p.c.checkSysVIPC(); p.ipcErr != nil {
		return p.ipcErr
	}
	callHook(p.hooks.Frozen)
	p.files = make(chan filesResult, 1)
	go func() {
		t := time.Now()
		n, err := p.c.captureFiles(p.dir)
		p.files <- filesResult{n, err, time.Since(t)}
	}()
	return nil
}

// onDumped runs as soon as CRIU answers, before the used CRIU process is
// reaped: the thaw comes first.
func (p *pause) onDumped(dumpErr error) {
	if !p.isFrozen {
		return
	}
	p.st.Dump = time.Since(p.frozen)
	if dumpErr == nil && p.c.mem != nil {
		p.c.mem.reset(p.c.log)
		p.reset = true
	}
	p.thaw()
}

// waitFiles waits for the archives, if they were started.
func (p *pause) waitFiles() {
	if p.files != nil {
		r := <-p.files
		p.files = nil
		p.diffErr, p.st.DiffBytes, p.st.RootfsDiff = r.err, r.bytes, r.took
	}
}

// thaw ends the pause once; the Thawed hook follows every BeforeFreeze, also
// after a failed freeze (Freezer.Freeze has thawed again).
func (p *pause) thaw() {
	p.waitFiles()
	if p.isFrozen && !p.thawed {
		p.thawed = true
		t := time.Now()
		p.thawErr = p.c.freezer.Thaw(context.WithoutCancel(p.ctx))
		end := time.Now()
		p.st.Thaw = end.Sub(t)
		p.st.Pause = end.Sub(p.start)
	}
	if p.notified && !p.thawedHook {
		p.thawedHook = true
		callHook(p.hooks.Thawed)
	}
}

// err is what went wrong with the checkpoint, in the order that explains
// it best; nil if it is good.
func (p *pause) err(dumpErr, mergeErr error) error {
	c := p.c
	if p.frozeErr != nil {
		return p.frozeErr
	}
	if c.ipcToDump {
		ipcErr := p.ipcErr
		if err := c.dumpIPCNamespace(); err != nil {
			ipcErr = errors.Join(ipcErr, err)
		}
		return ipcErr
	}
	if dumpErr != nil {
		// The image directory, log included, is usually removed by the caller
		// after a failure: the log's errors go into the message.
		log := filepath.Join(p.dir, "dump.log")
		return fmt.Errorf("%w (%s: %s)", dumpErr, log, criuLogErrors(log, 3))
	}
	if !p.isFrozen {
		return fmt.Errorf("criu sent no %q notification; container was not frozen by us", p.freezeAt)
	}
	return errors.Join(p.diffErr, p.thawErr, mergeErr)
}
