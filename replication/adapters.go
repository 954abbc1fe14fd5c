package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/runtime/criu"
)

// NetfilterPath gates a container's traffic inside its network namespace:
// NFQUEUE rules at OUTPUT (output gate) and INPUT (input hold). Inside the
// namespace is the only place a macvlan service interface can be gated
// (it has no host end; docs/NETFILTER.md). Queue numbers are per namespace.
type NetfilterPath struct {
	NetNS       string // the container's network namespace path
	OutputQueue uint16 // default 0
	InputQueue  uint16 // default 1 (0 if OutputQueue is 1)
	Run         netfilter.CommandRunner
	Logger      *slog.Logger

	mu     sync.Mutex
	outQ   *netfilter.Queue
	inQ    *netfilter.Queue
	rules  *netfilter.Rules
	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed chan error
}

// Open binds both queues, starts their readers and then installs the rules
// (in this order: a rule to an unbound queue drops packets).
func (n *NetfilterPath) Open(ctx context.Context) (OutputGate, InputHold, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	log := n.Logger
	if log == nil {
		log = slog.Default()
	}
	in := n.InputQueue
	if in == n.OutputQueue {
		in = n.OutputQueue + 1
	}
	n.failed = make(chan error, 2)
	var err error
	if n.outQ, err = netfilter.OpenQueue(ctx, n.NetNS, n.OutputQueue, netfilter.QueueOptions{}); err != nil {
		return nil, nil, fmt.Errorf("opening output queue: %w", err)
	}
	if n.inQ, err = netfilter.OpenQueue(ctx, n.NetNS, in, netfilter.QueueOptions{}); err != nil {
		n.outQ.Close()
		return nil, nil, fmt.Errorf("opening input queue: %w", err)
	}
	gate := netfilter.NewOutputGate(n.outQ, log.With("queue", "output"))
	hold := netfilter.NewInputHold(n.inQ, log.With("queue", "input"))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	for _, run := range []func(context.Context) error{gate.Run, hold.Run} {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := run(runCtx); err != nil {
				n.failed <- err
			}
		}()
	}
	n.rules = &netfilter.Rules{NetNS: n.NetNS, OutputQueue: n.OutputQueue, InputQueue: in, Run: n.Run}
	if err := n.rules.Install(ctx); err != nil {
		n.closeLocked(context.WithoutCancel(ctx))
		return nil, nil, fmt.Errorf("installing gate rules in %s: %w", n.NetNS, err)
	}
	return gate, hold, nil
}

// Failed reports a queue reader that stopped.
func (n *NetfilterPath) Failed() <-chan error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.failed
}

// Close removes the rules, then stops and closes the queues; idempotent.
func (n *NetfilterPath) Close(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closeLocked(ctx)
}

func (n *NetfilterPath) closeLocked(ctx context.Context) error {
	var errs []error
	if n.rules != nil {
		if err := n.rules.Remove(ctx); err != nil {
			errs = append(errs, err)
		} else {
			n.rules = nil
		}
	}
	if n.cancel != nil {
		n.cancel()
		n.wg.Wait()
		n.cancel = nil
	}
	for _, q := range []**netfilter.Queue{&n.outQ, &n.inQ} {
		if *q != nil {
			if err := (*q).Close(); err != nil {
				errs = append(errs, err)
			}
			*q = nil
		}
	}
	return errors.Join(errs...)
}

// HookedCheckpointer is a Checkpointer that reports the freeze and the
// thaw itself (RuncCheckpointer does). The epoch loop prefers it: it holds
// input from BeforeFreeze to Thawed (only around the freeze, not during
// CRIU's ~25–30 ms start-up) and seals the gate's epoch in Frozen. The hooks
// follow criu.CheckpointHooks' guarantees: Thawed is called whenever
// BeforeFreeze was, also on failure; Frozen only after a successful freeze.
type HookedCheckpointer interface {
	Checkpointer
	CheckpointWithHooks(ctx context.Context, dir string, hooks criu.CheckpointHooks) (criu.CheckpointStats, error)
}

// RuncCheckpointer adapts criu.Checkpointer, which freezes the container
// itself on CRIU's "pre-dump" notification (after CRIU's start-up) and calls
// criu.CheckpointHooks around the freeze. The gate's epoch is sealed in
// the Frozen hook, i.e. while the container is frozen and before anything is
// dumped: every packet the container sent before the freeze belongs to the
// sealed epoch or an earlier one (or, if the gate's reader had not read it
// yet, to the next one, which only delays it), and nothing it sends after
// the thaw can belong to the sealed epoch.
type RuncCheckpointer struct {
	C *criu.Checkpointer
}

var _ HookedCheckpointer = RuncCheckpointer{}

// Checkpoint implements Checkpointer: frozen is called while frozen.
func (r RuncCheckpointer) Checkpoint(ctx context.Context, dir string, frozen func()) (criu.CheckpointStats, error) {
	return r.C.CheckpointWithHooks(ctx, dir, criu.CheckpointHooks{Frozen: frozen})
}

// CheckpointWithHooks implements HookedCheckpointer.
func (r RuncCheckpointer) CheckpointWithHooks(ctx context.Context, dir string, hooks criu.CheckpointHooks) (criu.CheckpointStats, error) {
	return r.C.CheckpointWithHooks(ctx, dir, hooks)
}

// Close implements Checkpointer.
func (r RuncCheckpointer) Close() error { return r.C.Close() }
