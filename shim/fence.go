// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"fmt"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/witness"
)

// EtcdFence is the engine's Fence on replication/witness (the shim's, and
// the engine's lab tests'): the engine knows nothing of etcd, and witness
// nothing of the engine.
type EtcdFence struct{ *witness.Etcd }

func (f EtcdFence) Status() replication.FenceStatus {
	s := f.Etcd.Status()
	return replication.FenceStatus{
		Witness: s.Witness, Key: s.Key, Holder: s.Holder, Lease: s.Lease,
		TTLMS: float64(s.TTL) / float64(time.Millisecond), MarginMS: float64(s.Margin) / float64(time.Millisecond),
		HeldUntil: s.HeldUntil, Lost: s.Lost, Renewals: s.Renewals,
	}
}

// openFence dials the host's witness for this replica's side, if one is
// configured (r.fence stays nil otherwise: the pair is unfenced).
func (r *replica) openFence(ctx context.Context) error {
	c := r.host.Witness
	if !c.Configured() {
		return nil
	}
	tlsCfg, err := witness.TLSFiles{CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile}.Load()
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	w, err := witness.Dial(witness.Config{
		Endpoints: c.Endpoints, TLS: tlsCfg, TTL: c.TTL(), Margin: c.Margin(), Prefix: c.Prefix,
		Pair: r.cfg.Pair, Holder: c.Holder(string(r.cfg.Role)), Logger: engineLogger(ctx),
	})
	if err != nil {
		return err
	}
	r.fence = EtcdFence{w}
	return nil
}

// engineFence is the fence to hand an engine: a nil interface when unfenced.
func (r *replica) engineFence() replication.Fence {
	if r.fence.Etcd == nil {
		return nil
	}
	return r.fence
}

// closeFence gives a held ownership up and closes the client.
func (r *replica) closeFence(ctx context.Context) error {
	if r.fence.Etcd == nil {
		return nil
	}
	if err := r.fence.Close(ctx); err != nil {
		return fmt.Errorf("closing the witness: %w", err)
	}
	return nil
}
