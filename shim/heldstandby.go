// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"fmt"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/runtime/servicenet"
)

// HeldStandby is the backup's service network around a restore when the
// service network has a gate namespace: the restored container's side of
// it is up during the restore and what the container sends there is held,
// then released once the address is up on this host.
//
// Why: the first thing a restored TCP connection sends (CRIU's window probe
// when it leaves repair mode, unsent data, the first retransmission) would
// be lost with the link down, and the connection would then wait for its
// retransmission timer, backed off, before the client hears from it. Held
// and released right after the gratuitous ARP, it reaches the client at
// once. The uplink stays down during the restore, so nothing leaves and
// nothing arrives before the address is taken over.
type HeldStandby struct {
	servicenet.StandbyService
	SN   *servicenet.ServiceNetwork
	Gate *netfilter.OutputGate // opened on the gate namespace with every epoch held
}

// OpenPromotionHold binds the gate namespace's queues of sn and installs its
// rules, holding everything from the container side until Release. It is
// done when the backup starts, not on the failover path (installing rules
// takes tens of milliseconds). ok is false for an adopted namespace.
func OpenPromotionHold(ctx context.Context, sn *servicenet.ServiceNetwork, p *netfilter.Path) (g *netfilter.OutputGate, in *netfilter.InputHold, ok bool, err error) {
	gn, ok := sn.Gate()
	if !ok {
		return nil, nil, false, nil
	}
	p.NetNS = sn.NetnsPath()
	p.Forward = &netfilter.Forward{NetNS: gn.NetNS, Inner: gn.InnerIf, Uplink: gn.Uplink}
	g, in, err = p.Open(ctx)
	if err != nil {
		return nil, nil, true, fmt.Errorf("promotion hold: %w", err)
	}
	return g, in, true, nil
}

// PrepareRestore implements replication.ServicePromoter: the container's
// side up (its packets go to the held gate), the restore routes.
func (h HeldStandby) PrepareRestore(ctx context.Context) error {
	if err := h.SN.InnerUp(ctx); err != nil {
		return err
	}
	return h.StandbyService.PrepareRestore(ctx)
}

// Promote implements replication.ServicePromoter: the address up and
// announced, then what the restored container sent meanwhile released, in
// order, and everything after it passed at once.
func (h HeldStandby) Promote(ctx context.Context) error {
	if err := h.StandbyService.Promote(ctx); err != nil {
		return err
	}
	if err := h.Gate.ReleaseAll(); err != nil {
		return fmt.Errorf("releasing what the restored container sent during the restore: %w", err)
	}
	return nil
}

// ReplayStandby is HeldStandby for hybrid mode: it also carries the
// replay's packets (replication.ReplayNetwork). Its gate must copy whole
// packets (netfilter.Path.WholePackets): the replay compares their bytes.
type ReplayStandby struct {
	HeldStandby
	Input *netfilter.InputHold // the promotion hold's, on the same path as Gate
	Links *servicenet.ReplayLinks
}

// JudgeOutputs implements replication.ReplayNetwork.
func (r ReplayStandby) JudgeOutputs(judge func([]byte) bool) { r.Gate.SetJudge(judge) }

// Inject implements replication.ReplayNetwork.
func (r ReplayStandby) Inject(p []byte) error { return r.Links.ToContainer(p) }

// DropKept implements replication.ReplayNetwork.
func (r ReplayStandby) DropKept(match func([]byte) bool) error { return r.Gate.DropHeld(match) }

// SendOut implements replication.ReplayNetwork.
func (r ReplayStandby) SendOut(p []byte) error { return r.Links.ToLAN(p) }

// Translate implements replication.ReplayNetwork.
func (r ReplayStandby) Translate(outbound, inbound func([]byte) bool) {
	r.Gate.SetRewrite(outbound)
	r.Input.SetRewrite(inbound)
}

var _ replication.ReplayNetwork = ReplayStandby{}
