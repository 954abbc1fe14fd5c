// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/iorrc/rrc/replication/hybridlog"
)

// Replay at a hybrid failover (docs/HYBRID.md): the restored container is
// fed the inputs the log holds after its checkpoint, in order, each only
// once the outputs logged before it have come out again (with a bound):
// the part of the original schedule that packets can enforce. Every output
// of the replayed container is judged by a hybridlog.Verifier.

// ReplayPackets is the replayed container's traffic during a replay, with
// its service link still cut off from the LAN.
type ReplayPackets interface {
	// Inject delivers a logged input packet (from its IP header on) to the
	// container as if it came from the network.
	Inject(packet []byte) error
	// Outputs yields what the container sends; each must be answered with
	// Judge exactly once.
	Outputs() <-chan ReplayOutput
}

// ReplayOutput is a packet the replayed container sent and the function
// that applies the verdict on it (drop it, keep it for after the replay,
// or reset its connection).
type ReplayOutput struct {
	Packet []byte
	Judge  func(hybridlog.Verdict, *hybridlog.Verifier)
}

// ReplayReport is what a replay did.
type ReplayReport struct {
	Inputs, Outputs int           // fed, and judged
	Waits           int           // inputs whose preceding outputs did not all come out within the bound
	Duration        time.Duration //
	Diverged        map[hybridlog.FlowKey]string
	Pending         []hybridlog.FlowKey // flows whose logged outputs did not all come out again
}

// replay feeds entries to the container behind p and judges its outputs
// until every input is fed and every logged output came out again, or the
// bound passed after the last input. bound also limits each wait for the
// outputs that precede an input.
func replay(ctx context.Context, entries []hybridlog.Entry, p ReplayPackets, bound time.Duration) (ReplayReport, error) {
	start := time.Now()
	v := hybridlog.NewVerifier(entries)
	var rep ReplayReport
	var mu sync.Mutex // guards v and rep.Outputs
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case o, ok := <-p.Outputs():
				if !ok {
					return
				}
				mu.Lock()
				verdict := v.Output(o.Packet)
				rep.Outputs++
				o.Judge(verdict, v)
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
	}()
	covered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return v.Covered()
	}
	// wait waits until want outputs are covered or the bound passes.
	wait := func(want int) (bool, error) {
		timer := time.NewTimer(bound)
		defer timer.Stop()
		for covered() < want {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-timer.C:
				return false, nil
			case <-progress:
			}
		}
		return true, nil
	}
	before := hybridlog.OutputsBefore(entries)
	for i, e := range entries {
		if e.Kind != hybridlog.KindInput {
			continue
		}
		ok, err := wait(before[i])
		if err != nil {
			return rep, err
		}
		if !ok {
			rep.Waits++
		}
		if err := p.Inject(e.Packet); err != nil {
			return rep, fmt.Errorf("replaying input %s: %w", e.Position, err)
		}
		rep.Inputs++
	}
	if _, err := wait(v.Expected()); err != nil {
		return rep, err
	}
	mu.Lock()
	defer mu.Unlock()
	rep.Diverged, rep.Pending = v.Diverged(), v.Pending()
	rep.Duration = time.Since(start)
	return rep, nil
}
