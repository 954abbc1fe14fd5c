// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/criu"
)

// This file holds the small interfaces the engine drives. The real
// implementations are criu.Checkpointer, netfilter.Path (through
// NetfilterPackets), peer.Sender, and the shim's restorer and servicenet's
// StandbyService; the unit tests drive the engine with fakes that record the
// order of the calls.

// Checkpointer checkpoints the running container (*criu.Checkpointer).
type Checkpointer interface {
	// CheckpointWithHooks writes a checkpoint of the running container into
	// dir and returns after the container has been thawed. The hooks follow
	// criu.CheckpointHooks' guarantees: Thawed is called whenever
	// BeforeFreeze was, also on failure; Frozen exactly once, after a
	// successful freeze and before anything is dumped, once no more of the
	// container's output can belong to the state being dumped (the engine
	// seals the output gate's epoch there; hooks must be quick).
	CheckpointWithHooks(ctx context.Context, dir string, hooks criu.CheckpointHooks) (criu.CheckpointStats, error)
	Close() error
}

// OutputGate holds the container's outbound packets by epoch
// (*netfilter.OutputGate).
type OutputGate interface {
	Seal() uint64
	Release(epoch uint64) error
	ReleaseAll() error
	Resume() uint64
	Stats() netfilter.GateStats
}

// InputHold queues inbound packets while the container is frozen
// (*netfilter.InputHold). In hybrid mode Drain logs the inputs delivered
// so far.
type InputHold interface {
	Hold() error
	Release() error
	Drain() error
	Stats() netfilter.HoldStats
}

// PacketPath puts the container's traffic through the gate: Open binds the
// queues and installs the rules (from then on every outbound packet is
// held); Close removes the rules and stops the queues, leaving nothing
// behind. Failed reports a queue that stopped: the gate then fails closed
// (packets are dropped), which the engine reports.
type PacketPath interface {
	Open(ctx context.Context, hooks PacketHooks) (OutputGate, InputHold, error)
	Failed() <-chan error
	Close(ctx context.Context) error
}

// PacketHooks are what hybrid mode adds to the gate (nil in epoch mode):
// Tag gives each output packet (from its IP header on) the sequence number
// of its record in the log, which releases it; Record logs each input packet
// before it is delivered.
type PacketHooks struct {
	Tag    func(packet []byte) (uint64, error)
	Logged func() // on the goroutine that logged records, after them
	Record func(packet []byte) error
}

// NetfilterPath is the PacketPath of a configured netfilter.Path (e.g. one
// whose Forward names the gate namespace).
func NetfilterPath(p *netfilter.Path) PacketPath { return netfilterPackets{p} }

type netfilterPackets struct{ *netfilter.Path }

func (p netfilterPackets) Open(ctx context.Context, hooks PacketHooks) (OutputGate, InputHold, error) {
	if tag := hooks.Tag; tag != nil {
		p.Path.Tag = func(pk *netfilter.Packet) (uint64, error) {
			if len(pk.Payload) != pk.Len() {
				return 0, fmt.Errorf("output packet of %d bytes cut at %d: it cannot be logged", pk.Len(), len(pk.Payload))
			}
			return tag(pk.Payload)
		}
	}
	p.Path.Record, p.Path.Logged = hooks.Record, hooks.Logged
	g, h, err := p.Path.Open(ctx)
	if err != nil {
		return nil, nil, err // typed nils would not compare equal to nil
	}
	return g, h, nil
}

// CheckpointSender is the primary's end of the peer channel (*peer.Sender).
type CheckpointSender interface {
	Send(ctx context.Context, c peer.Checkpoint) (peer.SendStats, error)
	SendLog(ctx context.Context, epoch, first uint64, count int, data []byte) error
	BackupCommitted() uint64
	Done() <-chan struct{}
	Err() error
	Close() error
	// Goodbye tells the backup that the primary stops on purpose, then
	// ends the session like Close.
	Goodbye(reason wire.GoodbyeReason, message string) error
}

// StopReason says why a primary stops on purpose: the backup is told (a
// goodbye on the peer channel) and does not take over. A primary that ends
// any other way has failed, and the backup does.
type StopReason = wire.GoodbyeReason

const (
	StopDeleted  StopReason = wire.GoodbyeDeleted  // the container was killed or deleted through containerd
	StopShutdown StopReason = wire.GoodbyeShutdown // the engine closed on a normal shutdown
	StopDemoted  StopReason = wire.GoodbyeDemoted  // a planned demotion
)

// DialFunc connects to the backup. The engine sets opts.OnAck and
// opts.OnPeerFailed; the function must pass them on to the session.
type DialFunc func(ctx context.Context, opts peer.Options) (CheckpointSender, error)

// Restorer restores a committed checkpoint as a running container on the
// backup, in the standby service network namespace.
type Restorer interface {
	Restore(ctx context.Context, c ckptstore.Checkpoint) (RestoredContainer, error)
	// Discard kills and removes a container Restore made that must not
	// become the service (its checkpoint failed verification meanwhile).
	Discard(ctx context.Context, rc RestoredContainer) error
}

// RestoredContainer is the container the backup restored: the service from
// now on. The shim adopts Pid as the task's init.
type RestoredContainer struct {
	ID       string `json:"id"`
	Pid      int    `json:"pid"`
	RuncRoot string `json:"runc_root,omitempty"`
	Bundle   string `json:"bundle,omitempty"`
	Epoch    uint64 `json:"epoch"` // the checkpoint it was restored from
}

// ServicePromoter takes over the service address on the backup
// (servicenet.StandbyService around servicenet's Promote, which the caller
// wires).
type ServicePromoter interface {
	// PrepareRestore makes a restore possible while the service link is
	// still down (TCP repair needs a route to the clients).
	PrepareRestore(ctx context.Context) error
	// Promote brings the service address up on this host (link up,
	// gratuitous ARP) and undoes PrepareRestore.
	Promote(ctx context.Context) error
}

// clock is time.Now, replaceable in tests.
type clock func() time.Time
