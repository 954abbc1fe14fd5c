// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/runtime/criu"
)

// Fault injection: the primary host fails at an exact point of an epoch.
//
// The primary engine process (enginehelper_test.go) wraps what the engine
// drives: the checkpointer's freeze hooks, the peer's Send (and the files it
// reads) and the backup's acks. When the armed point comes, the helper
// "dies" there: from that instant nothing of the engine reaches the world
// any more (every wrapped call blocks for ever; acks, a failure report or
// the end of the connection are swallowed, so no output is released and
// nothing more is sent), while the peer session keeps heartbeating on its
// own goroutine. It tells the test (a FIFO), which crashes host a at once
// (links cut first): the backup detects the failure only because of the
// crash, and must restore a checkpoint that keeps everything a client has
// seen acknowledged.

// Injection points.
const (
	injBeforeFreeze = "before-freeze"    // BeforeFreeze hook, before the input hold: CRIU up, container running
	injInputHeld    = "input-held"       // input held, container not yet frozen
	injFrozen       = "frozen"           // Frozen hook after the seal: frozen, epoch sealed, nothing dumped
	injThawed       = "thawed"           // Thawed hook after the input release: dumped, running again
	injBeforeSend   = "before-send"      // checkpoint taken, its transfer not started
	injMidTransfer  = "mid-transfer"     // the sender has read Bytes of the checkpoint's files
	injSent         = "sent"             // Send returned (every frame queued, end included), no ack yet
	injAckHeld      = "ack-not-released" // the backup's ack received, not given to the engine: output held
	injReleased     = "released"         // right after the engine released the acked epoch's output
	injRandom       = "random"           // no point: the test crashes a at a random time
)

// injectArgs arm the primary helper's fault injection (helperArgs.Inject).
type injectArgs struct {
	Point string
	// After: the point of the After-th checkpoint (epoch) after arming.
	After uint64
	// Bytes (mid-transfer): bytes of the checkpoint read before blocking;
	// negative or too large: all but the last byte.
	Bytes  int64
	Ctl    string // FIFO the test writes "arm" to (the clients are busy)
	Notify string // FIFO the helper writes one injectReport (a JSON line) to
}

// injectReport is what the helper knew when it died.
type injectReport struct {
	Point string
	// Epoch at the point: the checkpoint's number for the hook points (its
	// epoch unless a checkpoint failed), the wire epoch sent or acked for
	// the others.
	Epoch        uint64
	Detail       string `json:",omitempty"`
	Armed        uint64 // checkpoints started when armed
	Checkpoints  uint64 // checkpoints started
	SendDone     uint64 // newest epoch whose Send returned without error
	InFlight     uint64 // epoch being sent (0: none)
	AckSeen      uint64 // newest epoch the backup acknowledged, as far as the helper heard
	AckForwarded uint64 // newest ack given to the engine (its output may be released)
	At           time.Time
}

// injector is the helper's side.
type injector struct {
	a       injectArgs
	log     *slog.Logger
	notify  *os.File
	stopped atomic.Bool // set under mu

	mu     sync.Mutex
	armed  bool
	target uint64
	rep    injectReport // counters
}

func newInjector(a injectArgs, log *slog.Logger) (*injector, error) {
	j := &injector{a: a, log: log}
	var err error
	// The test holds both FIFOs open read-write: neither open blocks.
	if j.notify, err = os.OpenFile(a.Notify, os.O_WRONLY, 0); err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	ctl, err := os.Open(a.Ctl)
	if err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	go func() {
		defer ctl.Close()
		sc := bufio.NewScanner(ctl)
		for sc.Scan() {
			if sc.Text() == "arm" {
				j.mu.Lock()
				if !j.armed {
					j.armed, j.rep.Armed, j.target = true, j.rep.Checkpoints, j.rep.Checkpoints+a.After
					j.log.Info("fault injection armed", "point", a.Point, "at_checkpoint", j.target)
				}
				j.mu.Unlock()
			}
		}
	}()
	return j, nil
}

// matchesLocked: this is the armed point (j.mu held).
func (j *injector) matchesLocked(point string, epoch uint64) bool {
	return j.armed && !j.stopped.Load() && point == j.a.Point && epoch >= j.target
}

func (j *injector) matches(point string, epoch uint64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.matchesLocked(point, epoch)
}

// stopLocked kills the engine here (j.mu held); false if it already was.
func (j *injector) stopLocked(point string, epoch uint64, detail string) (injectReport, bool) {
	if j.stopped.Load() {
		return injectReport{}, false
	}
	j.stopped.Store(true)
	r := j.rep
	r.Point, r.Epoch, r.Detail, r.At = point, epoch, detail, time.Now()
	return r, true
}

// announce tells the test (first thing: it crashes the host on it).
func (j *injector) announce(r injectReport) {
	b, _ := json.Marshal(r)
	j.notify.Write(append(b, '\n'))
	j.log.Warn("fault injected: the primary is dead from here", "point", r.Point, "epoch", r.Epoch, "detail", r.Detail)
}

// fire stops at point without blocking the caller.
func (j *injector) fire(point string, epoch uint64, detail string) {
	j.mu.Lock()
	r, ok := j.stopLocked(point, epoch, detail)
	j.mu.Unlock()
	if ok {
		j.announce(r)
	}
}

// halt blocks the calling goroutine for ever: the host is being crashed.
func (j *injector) halt() { <-make(chan struct{}) }

func (j *injector) blockIfStopped() {
	if j.stopped.Load() {
		j.halt()
	}
}

// at is a blocking point: dies here if armed for it.
func (j *injector) at(point string, epoch uint64) {
	j.blockIfStopped()
	if j.matches(point, epoch) {
		j.fire(point, epoch, "")
		j.halt()
	}
}

// checkpointer wraps the container's checkpointer: the freeze hooks.
func (j *injector) checkpointer(c replication.Checkpointer) replication.Checkpointer {
	return injCheckpointer{Checkpointer: c, j: j}
}

type injCheckpointer struct {
	replication.Checkpointer
	j *injector
}

func (c injCheckpointer) CheckpointWithHooks(ctx context.Context, dir string, h criu.CheckpointHooks) (criu.CheckpointStats, error) {
	j := c.j
	j.blockIfStopped()
	j.mu.Lock()
	j.rep.Checkpoints++
	n := j.rep.Checkpoints
	j.mu.Unlock()
	call := func(f func()) {
		if f != nil {
			f()
		}
	}
	return c.Checkpointer.CheckpointWithHooks(ctx, dir, criu.CheckpointHooks{
		BeforeFreeze: func() {
			j.at(injBeforeFreeze, n)
			call(h.BeforeFreeze)
			j.at(injInputHeld, n)
		},
		Frozen: func() {
			j.blockIfStopped()
			call(h.Frozen)
			j.at(injFrozen, n)
		},
		Thawed: func() {
			j.blockIfStopped()
			call(h.Thawed)
			j.at(injThawed, n)
		},
	})
}

// dial replaces peer.Dial: the same session, its acks, failure reports and
// sends wrapped.
func (j *injector) dial(addr string, creds *peertls.Credentials) replication.DialFunc {
	return func(ctx context.Context, o peer.Options) (replication.CheckpointSender, error) {
		j.blockIfStopped()
		onAck, onFailed := o.OnAck, o.OnPeerFailed
		o.OnAck = func(a peer.Ack) {
			// Never blocks: the reader goroutine goes on reading heartbeats.
			j.mu.Lock()
			defer j.mu.Unlock()
			if j.stopped.Load() {
				return // a dead primary hears nothing
			}
			if a.Err == nil {
				j.rep.AckSeen = max(j.rep.AckSeen, a.Epoch)
				if j.matchesLocked(injAckHeld, a.Epoch) {
					if r, ok := j.stopLocked(injAckHeld, a.Epoch, ""); ok {
						go j.announce(r)
					}
					return
				}
			}
			onAck(a) // under j.mu: a stop cannot slip between the check and the release
			if a.Err == nil {
				j.rep.AckForwarded = max(j.rep.AckForwarded, a.Epoch)
				if j.matchesLocked(injReleased, a.Epoch) {
					if r, ok := j.stopLocked(injReleased, a.Epoch, ""); ok {
						go j.announce(r)
					}
				}
			}
		}
		o.OnPeerFailed = func(f peer.PeerFailure) {
			if !j.stopped.Load() {
				onFailed(f)
			}
		}
		s, err := peer.Dial(ctx, addr, creds, o)
		if err != nil {
			return nil, err
		}
		w := &injSender{CheckpointSender: s, j: j, done: make(chan struct{})}
		go func() {
			<-s.Done()
			j.mu.Lock()
			defer j.mu.Unlock()
			if !j.stopped.Load() { // a dead primary does not go degraded
				close(w.done)
			}
		}()
		return w, nil
	}
}

type injSender struct {
	replication.CheckpointSender
	j    *injector
	done chan struct{}
}

func (w *injSender) Done() <-chan struct{} { return w.done }

func (w *injSender) Send(ctx context.Context, c peer.Checkpoint) (peer.SendStats, error) {
	j := w.j
	j.at(injBeforeSend, c.Epoch)
	f := &injFS{j: j, epoch: c.Epoch, limit: -1}
	if j.matches(injMidTransfer, c.Epoch) {
		total := sourcesSize(c.Sources)
		f.limit = j.a.Bytes
		if f.limit < 0 || f.limit >= total {
			f.limit = total - 1
		}
		f.detail = fmt.Sprintf("after %d of %d bytes read", f.limit, total)
	}
	srcs := slices.Clone(c.Sources)
	for i := range srcs {
		g := *f
		g.FS, g.read = srcs[i].FS, &f.n
		srcs[i].FS = &g
	}
	c.Sources = srcs
	j.mu.Lock()
	j.rep.InFlight = c.Epoch
	j.mu.Unlock()
	st, err := w.CheckpointSender.Send(ctx, c)
	j.mu.Lock()
	j.rep.InFlight = 0
	if err == nil {
		j.rep.SendDone = max(j.rep.SendDone, c.Epoch)
	}
	j.mu.Unlock()
	j.at(injSent, c.Epoch)
	return st, err
}

func sourcesSize(srcs []peer.Source) int64 {
	var total int64
	for _, s := range srcs {
		// The callback never stops the walk, so WalkDir has no error to return.
		_ = fs.WalkDir(s.FS, ".", func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
				}
			}
			return nil
		})
	}
	return total
}

// injFS counts (and with a limit, stops) the bytes the sender reads; after
// the stop every read blocks.
type injFS struct {
	fs.FS
	j      *injector
	epoch  uint64
	limit  int64 // -1: none
	detail string
	n      int64  // bytes read (in the first copy)
	read   *int64 // shared by the sources of one checkpoint
}

func (f *injFS) Open(name string) (fs.File, error) {
	f.j.blockIfStopped()
	file, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return &injFile{File: file, fs: f}, nil
}

func (f *injFS) Stat(name string) (fs.FileInfo, error)      { return fs.Stat(f.FS, name) }
func (f *injFS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(f.FS, name) }

type injFile struct {
	fs.File
	fs *injFS
}

func (r *injFile) Read(p []byte) (int, error) {
	f := r.fs
	f.j.blockIfStopped()
	if f.limit >= 0 {
		rem := f.limit - atomic.LoadInt64(f.read)
		if rem <= 0 {
			f.j.fire(injMidTransfer, f.epoch, f.detail)
			f.j.halt()
		}
		if int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	n, err := r.File.Read(p)
	atomic.AddInt64(f.read, int64(n))
	return n, err
}
