// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQueue models the kernel queue: packets wait in id order until a batch
// verdict covers them; accepted records the ids in the order reinjected.
type fakeQueue struct {
	mu       sync.Mutex
	queued   []uint32
	accepted []uint32
	dropped  []uint32
	payloads map[uint32]string // content given with a verdict (VerdictPayload)
	verdicts int
	fail     error
	in       chan []Packet
}

func newFakeQueue() *fakeQueue { return &fakeQueue{in: make(chan []Packet)} }

func (f *fakeQueue) enqueue(ids ...uint32) []Packet {
	f.mu.Lock()
	defer f.mu.Unlock()
	var pkts []Packet
	for _, id := range ids {
		f.queued = append(f.queued, id)
		pkts = append(pkts, Packet{ID: id, CapLen: 100})
	}
	return pkts
}

func (f *fakeQueue) ReadBatch(ctx context.Context, dst []Packet) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case p := <-f.in:
		return copy(dst, p), nil
	}
}

func (f *fakeQueue) VerdictBatch(maxID uint32, v Verdict) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.verdicts++
	k := 0
	for k < len(f.queued) && int32(f.queued[k]-maxID) <= 0 { // the kernel's nfq_id_after
		k++
	}
	if v == Accept {
		f.accepted = append(f.accepted, f.queued[:k]...)
	}
	f.queued = f.queued[k:]
	return nil
}

func (f *fakeQueue) Verdict(id uint32, v Verdict) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	i := slices.Index(f.queued, id)
	if i < 0 {
		return fmt.Errorf("verdict on packet %d, which is not queued", id)
	}
	f.verdicts++
	f.queued = slices.Delete(f.queued, i, i+1)
	if v == Accept {
		f.accepted = append(f.accepted, id)
	} else {
		f.dropped = append(f.dropped, id)
	}
	return nil
}

func (f *fakeQueue) VerdictPayload(id uint32, v Verdict, payload []byte) error {
	if err := f.Verdict(id, v); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.payloads == nil {
		f.payloads = map[uint32]string{}
	}
	f.payloads[id] = string(payload)
	return nil
}

func (f *fakeQueue) state() (accepted []uint32, verdicts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.accepted...), f.verdicts
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestGateEpochs drives the gate's bookkeeping with scripts of steps:
// "p 1 2" packets read in one batch, "s" seal (want the epoch after =),
// "r N" release epoch N, "a" release all, "u" resume, "x" verdicts fail.
// After each script: the ids accepted, in order, and the verdicts sent.
func TestGateEpochs(t *testing.T) {
	tests := []struct {
		name     string
		steps    string
		accepted string
		verdicts int
		held     int
		errs     string // substrings of errors of the steps, in order
	}{
		{"nothing released while held", "p 1 2; p 3", "", 0, 3, ""},
		{"release sealed epoch only", "p 1 2; s=1; p 3; s=2; p 4; r 1", "1 2", 1, 2, ""},
		{"later epoch not released by earlier", "p 1; s=1; p 2; r 1; r 1", "1", 1, 1, ""},
		{"one verdict for several epochs", "p 1; s=1; p 2; s=2; p 3; s=3; r 3", "1 2 3", 1, 0, ""},
		{"empty epoch", "s=1; r 1; p 5; s=2; r 2", "5", 1, 0, ""},
		{"unsealed epoch refused", "p 1; r 1", "", 0, 1, "not sealed"},
		{"release all then pass through batched", "p 1; s=1; p 2; a; p 3 4 5; p 6", "1 2 3 4 5 6", 3, 0, ""},
		{"resume holds again", "a; p 1; u; p 2; s=1; p 3; s=2; r 1", "1 2", 2, 1, ""},
		{"failed verdict changes nothing", "p 1; s=1; x; r 1; p 2; s=2; r 2", "1 2", 1, 0, "injected"},
		{"ids wrap", "p 4294967294 4294967295; s=1; p 0 1; s=2; r 1; r 2", "4294967294 4294967295 0 1", 2, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fq := newFakeQueue()
			g := NewOutputGate(fq, discardLog())
			var errs []string
			for _, step := range strings.Split(tt.steps, ";") {
				f := strings.Fields(step)
				switch {
				case f[0] == "p":
					var ids []uint32
					for _, s := range f[1:] {
						n, _ := strconv.ParseUint(s, 10, 32)
						ids = append(ids, uint32(n))
					}
					if err := g.admit(fq.enqueue(ids...)); err != nil {
						t.Fatal(err)
					}
				case strings.HasPrefix(f[0], "s="):
					want, _ := strconv.ParseUint(f[0][2:], 10, 64)
					if got := g.Seal(); got != want {
						t.Fatalf("Seal = %d, want %d", got, want)
					}
				case f[0] == "r":
					e, _ := strconv.ParseUint(f[1], 10, 64)
					if err := g.Release(e); err != nil {
						errs = append(errs, err.Error())
					}
				case f[0] == "a":
					if err := g.ReleaseAll(); err != nil {
						t.Fatal(err)
					}
				case f[0] == "u":
					g.Resume()
				case f[0] == "x":
					fq.fail = errors.New("injected")
				}
				if f[0] != "x" && f[0] != "r" {
					fq.fail = nil
				}
				if f[0] == "r" && fq.fail != nil {
					fq.fail = nil
				}
			}
			acc, verdicts := fq.state()
			if got := strings.Trim(fmt.Sprint(acc), "[]"); got != tt.accepted || verdicts != tt.verdicts {
				t.Errorf("accepted %q with %d verdicts, want %q with %d", got, verdicts, tt.accepted, tt.verdicts)
			}
			st := g.Stats()
			if st.Held != tt.held || st.HeldBytes != int64(100*tt.held) {
				t.Errorf("stats %+v, want %d held", st, tt.held)
			}
			if uint64(len(acc)) != st.Released {
				t.Errorf("Released %d, accepted %d", st.Released, len(acc))
			}
			if got := strings.Join(errs, "|"); (tt.errs == "") != (got == "") || !strings.Contains(got, tt.errs) {
				t.Errorf("errors %q, want %q", got, tt.errs)
			}
		})
	}
}

func TestGateStopsClosed(t *testing.T) {
	fq := newFakeQueue()
	g := NewOutputGate(fq, discardLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	fq.in <- fq.enqueue(1, 2)
	fq.in <- fq.enqueue(3) // returns once the first batch was handled
	if g.Seal() != 1 {
		t.Fatal("seal")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := g.Stats()
	if st.Dropped < 2 || st.Held != 0 {
		t.Fatalf("stats after stop %+v", st)
	}
	if err := g.Release(1); !errors.Is(err, ErrStopped) {
		t.Fatalf("Release after stop: %v", err)
	}
	if err := g.ReleaseAll(); !errors.Is(err, ErrStopped) {
		t.Fatalf("ReleaseAll after stop: %v", err)
	}
	if acc, _ := fq.state(); len(acc) != 0 {
		t.Fatalf("accepted %v after stop", acc)
	}
}

func TestGateOldestHeldAge(t *testing.T) {
	fq := newFakeQueue()
	g := NewOutputGate(fq, discardLog())
	now := time.Unix(100, 0)
	g.now = func() time.Time { return now }
	g.admit(fq.enqueue(1))
	now = now.Add(30 * time.Millisecond)
	g.admit(fq.enqueue(2))
	now = now.Add(20 * time.Millisecond)
	if age := g.Stats().OldestHeldAge; age != 50*time.Millisecond {
		t.Fatalf("age %v", age)
	}
}

func TestInputHold(t *testing.T) {
	fq := newFakeQueue()
	h := NewInputHold(fq, discardLog())
	h.admit(fq.enqueue(1, 2, 3))
	if acc, v := fq.state(); len(acc) != 3 || v != 1 {
		t.Fatalf("pass-through: accepted %v with %d verdicts", acc, v)
	}
	if err := h.Hold(); err != nil {
		t.Fatal(err)
	}
	h.admit(fq.enqueue(4))
	h.admit(fq.enqueue(5, 6))
	if acc, _ := fq.state(); len(acc) != 3 || h.Stats().Held != 3 {
		t.Fatalf("holding: accepted %v, stats %+v", acc, h.Stats())
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	h.admit(fq.enqueue(7))
	acc, v := fq.state()
	if fmt.Sprint(acc) != "[1 2 3 4 5 6 7]" || v != 3 {
		t.Fatalf("accepted %v with %d verdicts", acc, v)
	}
	if st := h.Stats(); st.Accepted != 7 || st.Holds != 1 || st.Holding {
		t.Fatalf("stats %+v", st)
	}
}

// TestTaggedGate: a tagged gate holds each packet under its tag (the packet
// id plus 10 here, as a log's sequence numbers grow with queue order),
// releases up to a tag with one verdict, and stops on a tag that goes back
// or a tagging error.
func TestTaggedGate(t *testing.T) {
	fq := newFakeQueue()
	var fail error
	g := NewTaggedOutputGate(fq, func(p *Packet) (uint64, error) { return uint64(p.ID) + 10, fail }, nil, discardLog())
	if err := g.admit(fq.enqueue(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	if err := g.admit(fq.enqueue(4)); err != nil {
		t.Fatal(err)
	}
	if err := g.Release(12); err != nil {
		t.Fatal(err)
	}
	if acc, v := fq.state(); fmt.Sprint(acc) != "[1 2]" || v != 1 {
		t.Fatalf("released %v with %d verdicts, want [1 2] with 1", acc, v)
	}
	if err := g.Release(100); err != nil { // beyond what is held: all of it
		t.Fatal(err)
	}
	if acc, _ := fq.state(); fmt.Sprint(acc) != "[1 2 3 4]" {
		t.Fatalf("released %v", acc)
	}
	if err := g.admit(fq.enqueue(20)); err != nil {
		t.Fatal(err)
	}
	if err := g.admit(fq.enqueue(5)); err == nil || !strings.Contains(err.Error(), "after") {
		t.Fatalf("a tag going back: %v", err)
	}
	fail = errors.New("log full")
	if err := g.admit(fq.enqueue(21)); err == nil || !strings.Contains(err.Error(), "log full") {
		t.Fatalf("a tagging error: %v", err)
	}
}

// fakeSwitch records a switched hold's switching.
type fakeSwitch struct {
	log  []bool
	fail error
}

func (f *fakeSwitch) Set(on bool) error {
	if f.fail != nil {
		return f.fail
	}
	f.log = append(f.log, on)
	return nil
}
func (f *fakeSwitch) Close() error { return nil }

// TestSwitchedInputHold: a switched hold turns the queueing on before it
// holds and off after it delivered what it held; a hold that cannot switch
// on does not hold.
func TestSwitchedInputHold(t *testing.T) {
	fq := newFakeQueue()
	sw := &fakeSwitch{}
	h := NewSwitchedInputHold(fq, sw, nil, discardLog())
	if err := h.Hold(); err != nil {
		t.Fatal(err)
	}
	h.admit(fq.enqueue(1, 2))
	if acc, _ := fq.state(); len(acc) != 0 || fmt.Sprint(sw.log) != "[true]" {
		t.Fatalf("holding: accepted %v, switched %v", acc, sw.log)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	h.admit(fq.enqueue(3)) // queued before the switch went off: passes
	if acc, _ := fq.state(); fmt.Sprint(acc) != "[1 2 3]" || fmt.Sprint(sw.log) != "[true false]" {
		t.Fatalf("released: accepted %v, switched %v", acc, sw.log)
	}
	if err := h.Drain(); err != nil { // no capture: nothing to log
		t.Fatal(err)
	}
	sw.fail = errors.New("netlink refused")
	if err := h.Hold(); err == nil || h.Stats().Holding {
		t.Fatalf("a hold that cannot switch: %v, stats %+v", err, h.Stats())
	}
}
