// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/iorrc/rrc/runtime/launch"
)

// Path gates a container's traffic inside its network namespace: NFQUEUE
// rules at OUTPUT (output gate) and INPUT (input hold). Inside the
// namespace is the only place a macvlan service interface can be gated
// (it has no host end; docs/NETFILTER.md). Queue numbers are per namespace.
type Path struct {
	NetNS       string          // the container's network namespace path
	OutputQueue uint16          // default 0
	InputQueue  uint16          // default 1 (0 if OutputQueue is 1)
	Launcher    launch.Launcher // runs iptables; nil: os/exec
	Logger      *slog.Logger
	// Tag and Record, if set, make the gate a tagged one and the input hold
	// a logging one (hybrid mode); the queues then copy whole wire-sized
	// packets.
	Tag    Tag
	Record Record

	mu     sync.Mutex
	outQ   *Queue
	inQ    *Queue
	rules  *Rules
	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed chan error
}

// Open binds both queues, starts their readers and then installs the rules
// (in this order: a rule to an unbound queue drops packets).
func (n *Path) Open(ctx context.Context) (*OutputGate, *InputHold, error) {
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
	var qopts QueueOptions
	if n.Tag != nil || n.Record != nil {
		qopts = QueueOptions{CopyRange: MaxCopyRange, NoGSO: true}
	}
	var err error
	if n.outQ, err = OpenQueue(ctx, n.NetNS, n.OutputQueue, qopts); err != nil {
		return nil, nil, fmt.Errorf("opening output queue: %w", err)
	}
	if n.inQ, err = OpenQueue(ctx, n.NetNS, in, qopts); err != nil {
		n.outQ.Close()
		return nil, nil, fmt.Errorf("opening input queue: %w", err)
	}
	gate := NewOutputGate(n.outQ, log.With("queue", "output"))
	if n.Tag != nil {
		gate = NewTaggedOutputGate(n.outQ, n.Tag, log.With("queue", "output"))
	}
	hold := NewInputHold(n.inQ, log.With("queue", "input"))
	if n.Record != nil {
		hold = NewLoggingInputHold(n.inQ, n.Record, log.With("queue", "input"))
	}
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
	n.rules = &Rules{NetNS: n.NetNS, OutputQueue: n.OutputQueue, InputQueue: in, Launcher: n.Launcher}
	if err := n.rules.Install(ctx); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("installing gate rules in %s: %w", n.NetNS, err), n.closeLocked(context.WithoutCancel(ctx)))
	}
	return gate, hold, nil
}

// Failed reports a queue reader that stopped.
func (n *Path) Failed() <-chan error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.failed
}

// Close removes the rules, then stops and closes the queues; idempotent.
func (n *Path) Close(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closeLocked(ctx)
}

func (n *Path) closeLocked(ctx context.Context) error {
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
	for _, q := range []**Queue{&n.outQ, &n.inQ} {
		if *q != nil {
			if err := (*q).Close(); err != nil {
				errs = append(errs, err)
			}
			*q = nil
		}
	}
	return errors.Join(errs...)
}
