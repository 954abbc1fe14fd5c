// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/criu"
)

// recorder collects the calls the engine makes on the fakes, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	added  chan struct{}
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1000)} }

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits until event has been recorded.
func (r *recorder) waitFor(t *testing.T, event string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if slices.Contains(r.list(), event) {
			return
		}
		select {
		case <-r.added:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %q; events: %v", event, r.list())
		}
	}
}

// fakeGate records the gate calls; with state set, seal records the state
// the container is in (see adapters_test.go).
type fakeGate struct {
	rec     *recorder
	state   func() string
	mu      sync.Mutex
	epoch   uint64
	traffic *atomic.Uint64 // packets the container sent, as Stats counts them
}

func (g *fakeGate) Seal() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
	if g.state != nil {
		g.rec.add("seal:%d@%s", g.epoch, g.state())
	} else {
		g.rec.add("seal:%d", g.epoch)
	}
	return g.epoch
}
func (g *fakeGate) Release(e uint64) error { g.rec.add("release-output:%d", e); return nil }
func (g *fakeGate) ReleaseAll() error      { g.rec.add("release-all"); return nil }
func (g *fakeGate) Stats() netfilter.GateStats {
	if g.traffic == nil {
		return netfilter.GateStats{}
	}
	return netfilter.GateStats{Released: g.traffic.Load()}
}
func (g *fakeGate) Resume() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rec.add("resume:%d", g.epoch+1)
	return g.epoch + 1
}

type fakeHold struct{ rec *recorder }

func (h fakeHold) Hold() error    { h.rec.add("hold"); return nil }
func (h fakeHold) Drain() error   { return nil }
func (h fakeHold) Release() error { h.rec.add("release-input"); return nil }
func (h fakeHold) Stats() netfilter.HoldStats {
	return netfilter.HoldStats{}
}

type fakePackets struct {
	rec     *recorder
	failed  chan error
	traffic atomic.Uint64 // packets the container sent (the gate's count)
	hooks   PacketHooks   // what the engine asked for (hybrid mode)
}

func (p *fakePackets) Open(_ context.Context, hooks PacketHooks) (OutputGate, InputHold, error) {
	// Each Tag a batch of one and each Record a drain of one, as the
	// gate's reader and the capture call them.
	if tag, record, logged := hooks.Tag, hooks.Record, hooks.Logged; tag != nil && logged != nil {
		hooks.Tag = func(pkt []byte) (uint64, error) {
			seq, err := tag(pkt)
			logged()
			return seq, err
		}
		hooks.Record = func(pkt []byte) error {
			err := record(pkt)
			logged()
			return err
		}
	}
	p.hooks = hooks
	p.rec.add("gate")
	return &fakeGate{rec: p.rec, traffic: &p.traffic}, fakeHold{p.rec}, nil
}
func (p *fakePackets) Failed() <-chan error { return p.failed }
func (p *fakePackets) Close(context.Context) error {
	p.rec.add("ungate")
	return nil
}

// fakeCheckpointer fails the checkpoints whose number is in fail.
type fakeCheckpointer struct {
	rec  *recorder
	mu   sync.Mutex
	n    int
	fail map[int]bool
	// hang: checkpoint n waits, frozen, until hang[n] is closed.
	hang map[int]chan struct{}
}

func (c *fakeCheckpointer) CheckpointWithHooks(ctx context.Context, dir string, h criu.CheckpointHooks) (criu.CheckpointStats, error) {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	call := func(f func()) {
		if f != nil {
			f()
		}
	}
	call(h.BeforeFreeze)
	defer call(h.Thawed)
	c.rec.add("freeze")
	call(h.Frozen)
	if wait, ok := c.hang[n]; ok {
		c.rec.add("hang:%d", n)
		<-wait
	}
	if c.fail[n] {
		c.rec.add("thaw")
		return criu.CheckpointStats{}, errors.New("criu: injected failure")
	}
	c.rec.add("dump")
	if err := os.WriteFile(filepath.Join(dir, "pages.img"), []byte("state"), 0o600); err != nil {
		c.rec.add("thaw")
		return criu.CheckpointStats{}, err
	}
	c.rec.add("thaw")
	return criu.CheckpointStats{Pause: 3 * time.Millisecond, ImageBytes: 5}, nil
}
func (c *fakeCheckpointer) Close() error { c.rec.add("close-criu"); return nil }

// fakeSender records sends; sendErr fails them; block makes Send wait.
type fakeSender struct {
	rec       *recorder
	committed uint64
	sendErr   error
	block     chan struct{}
	opts      peer.Options
	done      chan struct{}
	closeOnce sync.Once
}

func (s *fakeSender) Send(ctx context.Context, c peer.Checkpoint) (peer.SendStats, error) {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return peer.SendStats{}, ctx.Err()
		}
	}
	if _, err := c.Sources[0].FS.Open("pages.img"); err != nil {
		return peer.SendStats{}, fmt.Errorf("image missing while sending: %w", err)
	}
	if s.sendErr != nil {
		s.rec.add("send-failed:%d", c.Epoch)
		return peer.SendStats{}, s.sendErr
	}
	s.rec.add("send:%d", c.Epoch)
	return peer.SendStats{}, nil
}
func (s *fakeSender) SendLog(_ context.Context, epoch, first uint64, count int, _ []byte) error {
	s.rec.add("log:%d.%d+%d", epoch, first, count)
	return nil
}
func (s *fakeSender) BackupCommitted() uint64 { return s.committed }
func (s *fakeSender) Done() <-chan struct{}   { return s.done }
func (s *fakeSender) Err() error              { return errors.New("fake connection ended") }
func (s *fakeSender) Goodbye(reason wire.GoodbyeReason, _ string) error {
	s.rec.add("goodbye:%s", reason)
	return s.Close()
}
func (s *fakeSender) Close() error {
	s.closeOnce.Do(func() { s.rec.add("close-peer"); close(s.done) })
	return nil
}

// ack answers epoch as the backup would.
func (s *fakeSender) ack(epoch uint64, err error) {
	s.rec.add("ack:%d", epoch)
	s.opts.OnAck(peer.Ack{Epoch: epoch, At: time.Now(), Err: err})
}

type fakeRestorer struct {
	rec  *recorder
	err  error
	done chan struct{} // closed once Restore has run, if set
}

func (r fakeRestorer) Restore(_ context.Context, c ckptstore.Checkpoint) (RestoredContainer, error) {
	r.rec.add("restore:%d", c.Epoch)
	if r.done != nil {
		defer close(r.done)
	}
	if r.err != nil {
		return RestoredContainer{}, r.err
	}
	return RestoredContainer{ID: "restored", Pid: 4242}, nil
}

func (r fakeRestorer) Discard(_ context.Context, rc RestoredContainer) error {
	r.rec.add("discard:%d", rc.Pid)
	return nil
}

// newTestPrimary makes a started Primary on fakes.
func newTestPrimary(t *testing.T, epoch time.Duration, ck *fakeCheckpointer, snd *fakeSender) (*Primary, *fakePackets) {
	t.Helper()
	pk := &fakePackets{rec: ck.rec, failed: make(chan error, 1)}
	snd.rec = ck.rec
	return startTestPrimary(t, epoch, pk, ck, snd), pk
}

// startTestPrimary makes a started Primary whose peer is snd.
func startTestPrimary(t *testing.T, epoch time.Duration, pk PacketPath, ck Checkpointer, snd *fakeSender) *Primary {
	t.Helper()
	return startTestPrimaryMode(t, ModeEpoch, epoch, pk, ck, snd)
}

// startTestPrimaryMode is startTestPrimary in a given mode.
func startTestPrimaryMode(t *testing.T, mode Mode, epoch time.Duration, pk PacketPath, ck Checkpointer, snd *fakeSender) *Primary {
	t.Helper()
	return startTestPrimaryConfig(t, Config{Mode: mode, Epoch: epoch}, pk, ck, snd)
}

// startTestPrimaryConfig is startTestPrimary with cfg's settings (role,
// pair and peer are the tests').
func startTestPrimaryConfig(t *testing.T, cfg Config, pk PacketPath, ck Checkpointer, snd *fakeSender) *Primary {
	t.Helper()
	snd.done = make(chan struct{})
	cfg.Role, cfg.Pair, cfg.Peer = RolePrimary, "pair1", "192.0.2.2:7000"
	p, err := NewPrimary(context.Background(), PrimaryOptions{
		Config:  cfg,
		Packets: pk, WorkDir: t.TempDir(),
		Dial: func(_ context.Context, o peer.Options) (CheckpointSender, error) {
			snd.opts = o
			return snd, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := p.Start(context.Background(), ck); err != nil {
		t.Fatal(err)
	}
	return p
}

// loopTickForTest makes the loop take the next checkpoint now.
func (p *Primary) loopTickForTest() { p.kick <- struct{}{} }
