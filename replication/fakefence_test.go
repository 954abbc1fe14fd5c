// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// fakeWitness is an in-memory etcd as replication/witness uses it: one
// owner with a lease that expires ttl after its last renewal, and the
// degraded mark. Each side holds a fakeFence on it, which a test can cut
// off (its requests fail, as when etcd is unreachable).
type fakeWitness struct {
	ttl, margin time.Duration
	mu          sync.Mutex
	owner       string
	expires     time.Time
	degraded    string
}

func newFakeWitness(ttl time.Duration) *fakeWitness {
	return &fakeWitness{ttl: ttl, margin: ttl / 4}
}

// ownerLocked is the owner now, "" once its lease expired.
func (w *fakeWitness) ownerLocked(now time.Time) string {
	if w.owner != "" && !now.Before(w.expires) {
		w.owner = ""
	}
	return w.owner
}

func (w *fakeWitness) state() (owner, degraded string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ownerLocked(time.Now()), w.degraded
}

func (w *fakeWitness) fence(holder string) *fakeFence {
	return &fakeFence{w: w, holder: holder, changed: make(chan struct{}, 1), lost: make(chan struct{})}
}

var errCut = errors.New("witness unreachable")

type fakeFence struct {
	w      *fakeWitness
	holder string
	cut    atomic.Bool
	// failMark fails MarkDegraded alone (renewals go on).
	failMark atomic.Bool

	mu       sync.Mutex
	held     time.Time
	owning   bool
	stop     chan struct{}
	lostOnce sync.Once
	changed  chan struct{}
	lost     chan struct{}
}

func (f *fakeFence) Acquire(ctx context.Context, wait bool) (bool, error) {
	for {
		if !f.cut.Load() {
			w := f.w
			w.mu.Lock()
			now := time.Now()
			if o := w.ownerLocked(now); o == "" || o == f.holder {
				w.owner, w.expires = f.holder, now.Add(w.ttl)
				stale := wait && w.degraded != ""
				if !wait {
					w.degraded = ""
				}
				w.mu.Unlock()
				f.mu.Lock()
				f.owning, f.held = true, now.Add(w.ttl-w.margin)
				if f.stop == nil {
					f.stop = make(chan struct{})
					go f.renew(f.stop)
				}
				f.mu.Unlock()
				f.signal()
				return stale, nil
			}
			owner := w.owner
			w.mu.Unlock()
			if !wait {
				return false, fmt.Errorf("owned by %s", owner)
			}
		} else if !wait {
			return false, errCut
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// renew renews every ttl/3 while not cut; as the etcd fence, it takes the
// pair again if its lease expired and nobody took it, else it is lost.
func (f *fakeFence) renew(stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(f.w.ttl / 3):
		}
		if f.cut.Load() {
			continue
		}
		w := f.w
		w.mu.Lock()
		now := time.Now()
		o := w.ownerLocked(now)
		if o == "" || o == f.holder {
			w.owner, w.expires = f.holder, now.Add(w.ttl)
			w.mu.Unlock()
			f.mu.Lock()
			f.held = now.Add(w.ttl - w.margin)
			f.mu.Unlock()
			f.signal()
			continue
		}
		w.mu.Unlock()
		f.mu.Lock()
		f.owning = false
		f.mu.Unlock()
		f.lostOnce.Do(func() { close(f.lost) })
		f.signal()
		return
	}
}

func (f *fakeFence) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeFence) HeldUntil() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.owning {
		return time.Time{}
	}
	return f.held
}
func (f *fakeFence) Changed() <-chan struct{} { return f.changed }
func (f *fakeFence) Lost() <-chan struct{}    { return f.lost }

func (f *fakeFence) MarkDegraded(_ context.Context, on bool) error {
	if f.cut.Load() || f.failMark.Load() {
		return errCut
	}
	w := f.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ownerLocked(time.Now()) != f.holder {
		return errors.New("not the owner")
	}
	w.degraded = ""
	if on {
		w.degraded = f.holder
	}
	return nil
}

func (f *fakeFence) Release(context.Context) error {
	f.mu.Lock()
	if f.stop != nil {
		close(f.stop)
		f.stop = nil
	}
	f.owning = false
	f.mu.Unlock()
	f.signal()
	if f.cut.Load() {
		return errCut
	}
	w := f.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ownerLocked(time.Now()) == f.holder {
		w.owner = ""
	}
	return nil
}

func (f *fakeFence) Status() FenceStatus {
	return FenceStatus{Witness: "fake", Holder: f.holder, HeldUntil: f.HeldUntil()}
}
