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

// Path gates a container's traffic with NFQUEUE rules: in the namespace
// that forwards it when Forward names one (servicenet's gate namespace: out
// of the container's reach, and held packets no longer count against TCP
// Small Queues; docs/NETFILTER.md), otherwise inside the container's own
// namespace at OUTPUT and INPUT (an adopted namespace, whose topology is
// not ours). Queue numbers are per namespace.
type Path struct {
	NetNS       string          // the container's network namespace path
	Forward     *Forward        // the namespace that forwards its traffic, if any
	OutputQueue uint16          // default 0
	InputQueue  uint16          // default 1 (0 if OutputQueue is 1)
	Launcher    launch.Launcher // runs iptables; nil: os/exec
	Logger      *slog.Logger
	// Tag and Record, if set, make the gate a tagged one that copies whole
	// wire-sized packets, and log the input with an InputCapture on
	// Forward's inner link, the input queue switched on only while it holds
	// (hybrid mode; it needs Forward).
	Tag    Tag
	Record Record
	// Logged is called on the goroutine that logged records, after each
	// batch of outputs Tag tagged and each background drain of the
	// capture: hybrid mode hands the new records to the peer from there.
	Logged func()
	// WholePackets makes the queues copy whole wire-sized packets without
	// tagging or logging them (a replay judges them: OutputGate.SetJudge).
	WholePackets bool

	mu     sync.Mutex
	outQ   *Queue
	inQ    *Queue
	capt   *InputCapture
	sw     HoldSwitch
	rules  pathRules
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
	ns := n.NetNS
	var rules pathRules = &Rules{NetNS: n.NetNS, OutputQueue: n.OutputQueue, InputQueue: in, Launcher: n.Launcher}
	if f := n.Forward; f != nil {
		ns = f.NetNS
		fr := &ForwardRules{NetNS: f.NetNS, Inner: f.Inner, Uplink: f.Uplink, OutputQueue: n.OutputQueue, InputQueue: in, Launcher: n.Launcher}
		if n.Record != nil {
			fr.HoldGroup = HoldGroup
		}
		rules = fr
	} else if n.Record != nil {
		return nil, nil, errors.New("logging the input needs a forwarding namespace")
	}
	n.failed = make(chan error, 3)
	var outOpts, inOpts QueueOptions
	if n.Tag != nil || n.Record != nil || n.WholePackets {
		outOpts = QueueOptions{CopyRange: MaxCopyRange, NoGSO: true}
	}
	if n.WholePackets {
		inOpts = outOpts
	}
	var err error
	if n.outQ, err = OpenQueue(ctx, ns, n.OutputQueue, outOpts); err != nil {
		return nil, nil, fmt.Errorf("opening output queue in %s: %w", ns, err)
	}
	if n.inQ, err = OpenQueue(ctx, ns, in, inOpts); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("opening input queue in %s: %w", ns, err), n.closeLocked(ctx))
	}
	gate := NewOutputGate(n.outQ, log.With("queue", "output"))
	if n.Tag != nil {
		gate = NewTaggedOutputGate(n.outQ, n.Tag, n.Logged, log.With("queue", "output"))
	}
	hold := NewInputHold(n.inQ, log.With("queue", "input"))
	runs := []func(context.Context) error{gate.Run, hold.Run}
	if n.Record != nil {
		if n.capt, err = OpenInputCapture(ns, n.Forward.Inner, n.Record, n.Logged); err != nil {
			return nil, nil, errors.Join(err, n.closeLocked(ctx))
		}
		if n.sw, err = NewDevGroupSwitch(ns, n.Forward.Uplink); err != nil {
			return nil, nil, errors.Join(err, n.closeLocked(ctx))
		}
		hold = NewSwitchedInputHold(n.inQ, n.sw, n.capt, log.With("queue", "input"))
		gate.drain = n.capt.Drain
		runs = []func(context.Context) error{gate.Run, hold.Run, n.capt.Run}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	for _, run := range runs {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := run(runCtx); err != nil {
				n.failed <- err
			}
		}()
	}
	n.rules = rules
	if err := n.rules.Install(ctx); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("installing gate rules in %s: %w", ns, err), n.closeLocked(context.WithoutCancel(ctx)))
	}
	return gate, hold, nil
}

// Forward names a namespace that forwards all of a container's traffic
// between two of its interfaces.
type Forward struct {
	NetNS  string // its path
	Inner  string // interface toward the container
	Uplink string // interface toward the LAN
}

type pathRules interface {
	Install(context.Context) error
	Remove(context.Context) error
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
	if n.capt != nil {
		errs = append(errs, n.capt.Close())
		n.capt = nil
	}
	if n.sw != nil {
		errs = append(errs, n.sw.Close())
		n.sw = nil
	}
	return errors.Join(errs...)
}
