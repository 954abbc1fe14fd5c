// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package witness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is one side's hold on the pair's ownership in etcd. Acquire takes
// it; from then on it is renewed every TTL/3 until Release, and HeldUntil
// says until when it is certain. If the lease is found expired, the
// ownership is taken again if nobody took it meanwhile; if the other side
// did, Lost is closed.
type Etcd struct {
	cfg Config
	cli *clientv3.Client
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	lease     clientv3.LeaseID // 0 when not owning
	heldUntil time.Time
	renewals  uint64
	lapses    uint64 // renewals refused as expired
	stopRenew context.CancelFunc
	renewDone chan struct{}
	lostOnce  sync.Once
	closed    bool

	changed chan struct{} // buffer 1: HeldUntil moved or ownership ended
	lost    chan struct{} // closed when the other side owns the pair
}

// Dial makes the etcd client; it does not wait for a member to answer.
func Dial(cfg Config) (*Etcd, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: cfg.DialTimeout,
		// The client's own keep-alive notices a dead member within a TTL.
		DialKeepAliveTime:    cfg.TTL / 2,
		DialKeepAliveTimeout: cfg.DialTimeout,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("witness: etcd client for %v: %w", cfg.Endpoints, err)
	}
	return &Etcd{
		cfg: cfg, cli: cli, now: time.Now,
		log:     cfg.Logger.With("witness", "etcd", "key", cfg.OwnerKey()),
		changed: make(chan struct{}, 1),
		lost:    make(chan struct{}),
	}, nil
}

// Acquire makes this side the pair's owner. Without wait it fails with
// *OwnedError when another side owns the pair (a fresh primary: the mark
// of a degraded run is its own past, cleared); with wait it waits until
// the owner's key is gone (its lease expired in etcd, or revoked), and
// retries while etcd does not answer, until ctx ends. stale reports a
// degraded mark left by the previous owner.
func (e *Etcd) Acquire(ctx context.Context, wait bool) (stale bool, err error) {
	var lastOwner string
	for {
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return false, ErrClosed
		}
		stale, owner, rev, err := e.claim(ctx, !wait)
		switch {
		case err == nil && owner == "":
			e.startRenewing()
			e.log.Info("pair owned", "holder", e.cfg.Holder, "lease", fmt.Sprintf("%x", e.Lease()), "ttl", e.cfg.TTL, "stale", stale)
			return stale, nil
		case err == nil && !wait:
			return false, &OwnedError{Key: e.cfg.OwnerKey(), Owner: owner}
		case err == nil:
			if owner != lastOwner {
				e.log.Info("waiting for the owner's lease to expire", "owner", owner)
				lastOwner = owner
			}
			if err := e.waitGone(ctx, rev); err != nil && ctx.Err() != nil {
				return false, ctx.Err()
			}
		case !wait || ctx.Err() != nil:
			return false, fmt.Errorf("witness: taking ownership of %s: %w", e.cfg.Pair, err)
		default:
			e.log.Warn("etcd does not answer; retrying", "err", err)
			if !sleep(ctx, backoff(e.cfg.TTL)) {
				return false, ctx.Err()
			}
		}
	}
}

// claim grants a lease and creates the owner key with it if there is no
// owner key. On success owner is ""; otherwise the lease is revoked and
// owner names the holder, rev the revision to watch from. fresh deletes a
// degraded mark in the same transaction.
func (e *Etcd) claim(ctx context.Context, fresh bool) (stale bool, owner string, rev int64, err error) {
	var sent time.Time
	var g *clientv3.LeaseGrantResponse
	err = e.retry(ctx, e.cfg.DialTimeout, func(rctx context.Context) error {
		var err error
		sent = e.now()
		g, err = e.cli.Grant(rctx, int64(e.cfg.TTL/time.Second))
		return err
	})
	if err != nil {
		return false, "", 0, fmt.Errorf("granting a lease: %w", err)
	}
	owner, deg := e.cfg.OwnerKey(), e.cfg.DegradedKey()
	then := []clientv3.Op{clientv3.OpPut(owner, e.cfg.Holder, clientv3.WithLease(g.ID)), clientv3.OpGet(deg)}
	if fresh {
		then = append(then, clientv3.OpDelete(deg))
	}
	// A retried transaction is safe: a second one finds the key its first
	// created with the same lease, and says who owns it.
	var resp *clientv3.TxnResponse
	err = e.retry(ctx, e.cfg.DialTimeout, func(rctx context.Context) error {
		var err error
		resp, err = e.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(owner), "=", 0)).
			Then(then...).
			Else(clientv3.OpGet(owner)).Commit()
		return err
	})
	ours := err == nil && resp.Succeeded
	if err == nil && !resp.Succeeded {
		// A retry of a transaction that had committed finds its own key.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if ours = len(kvs) > 0 && kvs[0].Lease == int64(g.ID); ours {
			stale, err = e.degradedMark(ctx, fresh)
			ours = err == nil // unknown mark: not safe to own
		}
	} else if ours {
		stale = !fresh && len(resp.Responses[1].GetResponseRange().Kvs) > 0
	}
	if !ours {
		// Not ours (or unknown): the lease must not keep anything alive.
		rc, rcancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.DialTimeout)
		if _, rerr := e.cli.Revoke(rc, g.ID); rerr != nil {
			e.log.Debug("revoking an unused lease", "err", rerr) // it expires anyway
		}
		rcancel()
		if err != nil {
			return false, "", 0, fmt.Errorf("claiming %s: %w", owner, err)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 { // gone meanwhile
			return false, "-", resp.Header.Revision, nil
		}
		return false, string(kvs[0].Value), resp.Header.Revision, nil
	}
	e.mu.Lock()
	e.lease, e.heldUntil = g.ID, validity(sent, time.Duration(g.TTL)*time.Second, e.cfg.Margin)
	e.mu.Unlock()
	e.signal()
	return stale, "", 0, nil
}

// degradedMark reads the degraded mark after a claim whose transaction's
// answer was lost (fresh: deletes it, as the claim would have).
func (e *Etcd) degradedMark(ctx context.Context, fresh bool) (bool, error) {
	if fresh {
		return false, e.retry(ctx, e.cfg.DialTimeout, func(rctx context.Context) error {
			_, err := e.cli.Delete(rctx, e.cfg.DegradedKey())
			return err
		})
	}
	var n int64
	err := e.retry(ctx, e.cfg.DialTimeout, func(rctx context.Context) error {
		r, err := e.cli.Get(rctx, e.cfg.DegradedKey(), clientv3.WithCountOnly())
		if err == nil {
			n = r.Count
		}
		return err
	})
	return n > 0, err
}

// waitGone returns once the owner key is deleted after rev (its lease
// expired or was revoked), or the watch failed, or half a TTL has passed,
// or ctx ended; the caller claims again either way. The bound matters: a
// watch whose stream went to a member cut off from the others waits for
// nothing, and even its creation may wait for that member.
func (e *Etcd) waitGone(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), e.cfg.TTL/2)
	defer cancel()
	ch := e.cli.Watch(wctx, e.cfg.OwnerKey(), clientv3.WithRev(rev+1), clientv3.WithFilterPut())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wctx.Done():
			return nil
		case w, ok := <-ch:
			if !ok {
				return nil
			}
			if err := w.Err(); err != nil {
				return err
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return nil
				}
			}
		}
	}
}

// startRenewing renews the lease every TTL/3 until Release.
func (e *Etcd) startRenewing() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopRenew != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stopRenew, e.renewDone = cancel, make(chan struct{})
	go e.renew(ctx, e.renewDone)
}

func (e *Etcd) renew(ctx context.Context, done chan struct{}) {
	defer close(done)
	every := e.cfg.TTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		id := e.lease
		e.mu.Unlock()
		var sent time.Time
		var resp *clientv3.LeaseKeepAliveResponse
		err := e.retry(ctx, every, func(rctx context.Context) error {
			var err error
			sent = e.now()
			resp, err = e.cli.KeepAliveOnce(rctx, id)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return errFinal{err}
			}
			return err
		})
		switch {
		case err == nil && resp.TTL > 0:
			e.mu.Lock()
			e.heldUntil = validity(sent, time.Duration(resp.TTL)*time.Second, e.cfg.Margin)
			e.renewals++
			e.mu.Unlock()
			e.signal()
			if failing {
				e.log.Info("lease renewed again", "lease", fmt.Sprintf("%x", id))
				failing = false
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			e.expired(ctx, id)
		case ctx.Err() != nil:
			return
		default:
			if !failing {
				e.log.Warn("renewing the lease failed; ownership lapses at its margin unless a renewal succeeds", "lease", fmt.Sprintf("%x", id), "held_until", e.HeldUntil(), "err", err)
				failing = true
			}
		}
	}
}

// expired: etcd no longer knows the lease. Whoever holds the key now owns
// the pair: this side again if the key is free (nothing was released
// while lapsed, so its state is still the one clients saw), else it is
// superseded for good.
func (e *Etcd) expired(ctx context.Context, id clientv3.LeaseID) {
	e.mu.Lock()
	if e.lease == id {
		e.heldUntil = time.Time{}
		e.lapses++
	}
	e.mu.Unlock()
	e.signal()
	e.log.Error("the lease expired in etcd: ownership lapsed", "lease", fmt.Sprintf("%x", id))
	_, owner, _, err := e.claim(ctx, false)
	switch {
	case err != nil:
		e.log.Warn("taking the ownership again failed; retrying", "err", err)
	case owner == "":
		e.log.Warn("ownership taken again: nobody had taken it", "lease", fmt.Sprintf("%x", e.Lease()))
	case owner != "-":
		e.log.Error("the other side owns the pair: superseded", "owner", owner)
		e.mu.Lock()
		e.lease = 0
		stop := e.stopRenew
		e.mu.Unlock()
		e.lostOnce.Do(func() { close(e.lost) })
		e.signal()
		if stop != nil {
			stop() // this goroutine's own context: renewing is over
		}
	}
}

// retry runs f until it succeeds, returns an errFinal, or within has
// passed: each attempt gets a third of it and needs a member that has a
// leader. A member cut off from the others fails fast then (no leader)
// instead of holding the request, and the next attempt goes to another
// member (the client takes them in turn).
func (e *Etcd) retry(ctx context.Context, within time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), max(within/3, 50*time.Millisecond))
		err := f(actx)
		acancel()
		var final errFinal
		switch {
		case err == nil:
			return nil
		case errors.As(err, &final):
			return final.error
		case ctx.Err() != nil:
			return err
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return err
		}
	}
}

// errFinal ends retry: an answer, not a failure to get one.
type errFinal struct{ error }

func (e errFinal) Unwrap() error { return e.error }

func (e *Etcd) signal() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// HeldUntil is the time before which this side surely owns the pair; zero
// when it does not.
func (e *Etcd) HeldUntil() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease == 0 {
		return time.Time{}
	}
	return e.heldUntil
}

// Lease is the current lease, 0 if none.
func (e *Etcd) Lease() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return int64(e.lease)
}

// Changed is signalled when HeldUntil may have moved.
func (e *Etcd) Changed() <-chan struct{} { return e.changed }

// Lost is closed when the other side has taken the pair over.
func (e *Etcd) Lost() <-chan struct{} { return e.lost }

// MarkDegraded records (on) or clears the degraded mark, only while this
// side's lease is the owner key's.
func (e *Etcd) MarkDegraded(ctx context.Context, on bool) error {
	e.mu.Lock()
	id := e.lease
	e.mu.Unlock()
	if id == 0 {
		return errors.New("witness: not the owner")
	}
	op := clientv3.OpDelete(e.cfg.DegradedKey())
	if on {
		op = clientv3.OpPut(e.cfg.DegradedKey(), fmt.Sprintf("%s at %s", e.cfg.Holder, e.now().UTC().Format(time.RFC3339Nano)))
	}
	var resp *clientv3.TxnResponse
	err := e.retry(ctx, e.cfg.DialTimeout, func(rctx context.Context) error {
		var err error
		resp, err = e.cli.Txn(rctx).If(clientv3.Compare(clientv3.LeaseValue(e.cfg.OwnerKey()), "=", id)).Then(op).Commit()
		return err
	})
	if err != nil {
		return fmt.Errorf("witness: writing the degraded mark: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("witness: the degraded mark not written: this side's lease no longer owns the pair")
	}
	return nil
}

// Release gives the ownership up: renewals stop and the lease is revoked
// (the owner key goes with it).
func (e *Etcd) Release(ctx context.Context) error {
	e.mu.Lock()
	stop, done, id := e.stopRenew, e.renewDone, e.lease
	e.stopRenew, e.lease, e.heldUntil = nil, 0, time.Time{}
	e.mu.Unlock()
	e.signal()
	if stop != nil {
		stop()
		<-done
	}
	if id == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	if _, err := e.cli.Revoke(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("witness: revoking lease %x: %w", id, err)
	}
	e.log.Info("ownership released", "lease", fmt.Sprintf("%x", id))
	return nil
}

// Close releases the ownership if held and closes the client.
func (e *Etcd) Close(ctx context.Context) error {
	err := e.Release(ctx)
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	return errors.Join(err, e.cli.Close())
}

// Status describes the hold for the status file.
func (e *Etcd) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{Witness: "etcd", Endpoints: e.cfg.Endpoints, Key: e.cfg.OwnerKey(), Holder: e.cfg.Holder, TTL: e.cfg.TTL, Margin: e.cfg.Margin,
		Renewals: e.renewals, Lapses: e.lapses}
	if e.lease != 0 {
		s.Lease = fmt.Sprintf("%x", int64(e.lease))
		s.HeldUntil = e.heldUntil
	}
	select {
	case <-e.lost:
		s.Lost = true
	default:
	}
	return s
}

// Status is a snapshot of one side's hold.
type Status struct {
	Witness   string
	Endpoints []string
	Key       string
	Holder    string
	Lease     string // hex; "" when not owning
	TTL       time.Duration
	Margin    time.Duration
	HeldUntil time.Time
	Renewals  uint64
	Lapses    uint64
	Lost      bool
}
