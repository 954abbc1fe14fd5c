// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"fmt"

	"github.com/iorrc/rrc/runtime/launch"
)

// Default chain names of Rules.
const (
	DefaultOutputChain = "RRC-OUT"
	DefaultInputChain  = "RRC-IN"
)

// Rules are the iptables rules, inside the container's network namespace,
// that send its traffic to the queues:
//
//	-t mangle -N RRC-OUT; -A RRC-OUT ! -o lo -j NFQUEUE --queue-num OutputQueue
//	-t mangle -N RRC-IN;  -A RRC-IN  ! -i lo -j NFQUEUE --queue-num InputQueue
//	-t mangle -I OUTPUT 1 -j RRC-OUT; -I INPUT 1 -j RRC-IN
//
// for IPv4 and (unless NoIPv6) IPv6, so that no family bypasses the gate.
// Loopback stays inside the container and is not gated. Dedicated chains
// make removal clean and stale rules easy to spot after a crash. Queue
// numbers are per network namespace, so fixed numbers do here.
//
// Gating output at OUTPUT holds packets while the sending socket still owns
// them, and TCP Small Queues then lets a TCP connection put only about two
// packets into the gate per epoch: see HostOutputRules and NoOutput.
//
// Bind the queues (OpenQueue) before Install: packets sent to an unbound
// queue are dropped.
type Rules struct {
	NetNS       string // network namespace path; "" = the caller's
	OutputQueue uint16
	InputQueue  uint16
	OutputChain string // "" = DefaultOutputChain
	InputChain  string // "" = DefaultInputChain
	NoOutput    bool   // output is gated elsewhere (HostOutputRules): input rules only
	NoIPv6      bool   // skip ip6tables (only where the kernel has no IPv6)
	Launcher    launch.Launcher
}

func (r *Rules) ns() iptablesNS {
	return iptablesNS{netns: r.NetNS, noIPv6: r.NoIPv6, launch: r.Launcher}
}

func (r *Rules) chains() []queueChain {
	out, in := r.OutputChain, r.InputChain
	if out == "" {
		out = DefaultOutputChain
	}
	if in == "" {
		in = DefaultInputChain
	}
	var cs []queueChain
	if !r.NoOutput {
		cs = append(cs, queueChain{hook: "OUTPUT", chain: out, match: []string{"!", "-o", "lo"}, queue: r.OutputQueue})
	}
	return append(cs, queueChain{hook: "INPUT", chain: in, match: []string{"!", "-i", "lo"}, queue: r.InputQueue})
}

// allChains are the chains Remove and Present look for, NoOutput or not.
func (r *Rules) allChains() []queueChain {
	all := *r
	all.NoOutput = false
	return all.chains()
}

// Install installs the rules; it is idempotent and corrects a stale
// installation (other queue numbers) in place, atomically.
func (r *Rules) Install(ctx context.Context) error {
	if err := r.ns().install(ctx, r.chains()); err != nil {
		return fmt.Errorf("container rules: %w", err)
	}
	return nil
}

// Remove removes the jumps and chains, also when half installed or absent.
func (r *Rules) Remove(ctx context.Context) error {
	if err := r.ns().remove(ctx, r.allChains()); err != nil {
		return fmt.Errorf("container rules: %w", err)
	}
	return nil
}

// Present lists what of the rules is installed (as "iptables: -A OUTPUT -j
// RRC-OUT"), whatever the queue numbers: empty means clean. A shim starting
// up uses it to find stale rules.
func (r *Rules) Present(ctx context.Context) ([]string, error) {
	return r.ns().present(ctx, r.allChains())
}

// HostOutputRules gate the container's output where it enters the host, on
// the host end of the container's veth, instead of at the container's OUTPUT
// hook. Crossing the veth detaches a packet from its sending socket, so TCP
// Small Queues no longer counts held packets against the connection, and a
// TCP sender can fill an epoch instead of trickling (docs/NETFILTER.md has
// the throughput measured both ways). Use with Rules{NoOutput: true} in the
// container's namespace for the input side.
//
//	-t mangle -N RRC-O-<port>; -A RRC-O-<port> -j NFQUEUE --queue-num Queue
//	-t mangle -I PREROUTING 1 -m physdev --physdev-in <port> -j RRC-O-<port>   (Bridged)
//	-t mangle -I PREROUTING 1 -i <port> -j RRC-O-<port>                        (routed)
//
// Bridged ports need br_netfilter with net.bridge.bridge-nf-call-iptables
// (and -ip6tables) = 1 in NetNS, or bridged frames skip iptables: Install
// checks the sysctls. Queue numbers are per namespace, and the host's is
// shared by every container: Queue must be unique there. A macvlan has no
// host end; it can only be gated inside the container (Rules).
type HostOutputRules struct {
	NetNS    string // namespace of the veth's host end; "" = the caller's
	Port     string // the veth's host end
	Bridged  bool   // Port is a bridge port
	Queue    uint16 // unique within NetNS
	Chain    string // "" = "RRC-O-" + Port
	NoIPv6   bool
	Launcher launch.Launcher
}

func (h *HostOutputRules) ns() iptablesNS {
	return iptablesNS{netns: h.NetNS, noIPv6: h.NoIPv6, launch: h.Launcher}
}

func (h *HostOutputRules) chains() ([]queueChain, error) {
	if h.Port == "" {
		return nil, fmt.Errorf("host output rules: no port")
	}
	chain := h.Chain
	if chain == "" {
		chain = "RRC-O-" + h.Port
	}
	if len(chain) > 28 {
		return nil, fmt.Errorf("host output rules: chain name %q longer than 28 characters", chain)
	}
	jump := []string{"-i", h.Port}
	if h.Bridged {
		jump = []string{"-m", "physdev", "--physdev-in", h.Port}
	}
	return []queueChain{{hook: "PREROUTING", chain: chain, jumpMatch: jump, queue: h.Queue}}, nil
}

// Install installs the rules idempotently; for a bridged port it first
// checks that bridged traffic is passed to iptables at all.
func (h *HostOutputRules) Install(ctx context.Context) error {
	cs, err := h.chains()
	if err != nil {
		return err
	}
	if h.Bridged {
		for _, fam := range h.ns().families() {
			key := "net.bridge.bridge-nf-call-" + fam
			out, err := h.ns().exec(ctx, nil, "sysctl", "-n", key)
			if err != nil {
				return fmt.Errorf("host output rules: bridged port %s needs br_netfilter: %w", h.Port, err)
			}
			if v := string(out); len(v) == 0 || v[0] != '1' {
				return fmt.Errorf("host output rules: bridged port %s: %s is %q, must be 1 or bridged packets bypass the gate", h.Port, key, v)
			}
		}
	}
	if err := h.ns().install(ctx, cs); err != nil {
		return fmt.Errorf("host output rules for %s: %w", h.Port, err)
	}
	return nil
}

// Remove removes the jump and the chain, also when half installed or absent.
func (h *HostOutputRules) Remove(ctx context.Context) error {
	cs, err := h.chains()
	if err != nil {
		return err
	}
	if err := h.ns().remove(ctx, cs); err != nil {
		return fmt.Errorf("host output rules for %s: %w", h.Port, err)
	}
	return nil
}

// Present lists what of the rules is installed; empty means clean.
func (h *HostOutputRules) Present(ctx context.Context) ([]string, error) {
	cs, err := h.chains()
	if err != nil {
		return nil, err
	}
	return h.ns().present(ctx, cs)
}

// ForwardRules gate a container whose traffic a namespace of its own
// forwards (servicenet's gate namespace): the container's output is queued
// where it enters that namespace from the container's link, its input where
// it enters from the LAN.
//
//	-t mangle -N RRC-OUT; -A RRC-OUT -j NFQUEUE --queue-num OutputQueue
//	-t mangle -N RRC-IN;  -A RRC-IN  -j NFQUEUE --queue-num InputQueue
//	-t mangle -I PREROUTING 1 -i Inner -j RRC-OUT
//	-t mangle -I PREROUTING 1 -i Uplink -j RRC-IN
//
// Unlike Rules, the container can neither reach them (another namespace)
// nor go around them (every frame it sends, from a packet socket too, must
// be routed here to leave), and a held packet no longer belongs to its
// socket (the veth detached it), so TCP Small Queues does not throttle the
// sender. PREROUTING is before the routing decision: nothing the gate
// namespace forwards skips it.
type ForwardRules struct {
	NetNS       string // the forwarding namespace; "" = the caller's
	Inner       string // interface toward the container
	Uplink      string // interface toward the LAN
	OutputQueue uint16
	InputQueue  uint16
	// HoldGroup, if set, queues the input only while the uplink is in
	// this device group (HoldSwitch): -A RRC-IN -m devgroup --src-group G.
	HoldGroup uint32
	NoIPv6    bool
	Launcher  launch.Launcher
}

func (f *ForwardRules) ns() iptablesNS {
	return iptablesNS{netns: f.NetNS, noIPv6: f.NoIPv6, launch: f.Launcher}
}

func (f *ForwardRules) chains() ([]queueChain, error) {
	if f.Inner == "" || f.Uplink == "" || f.Inner == f.Uplink {
		return nil, fmt.Errorf("forward rules: need two distinct interfaces (inner %q, uplink %q)", f.Inner, f.Uplink)
	}
	if f.OutputQueue == f.InputQueue {
		return nil, fmt.Errorf("forward rules: output and input share queue %d", f.OutputQueue)
	}
	in := queueChain{hook: "PREROUTING", chain: DefaultInputChain, jumpMatch: []string{"-i", f.Uplink}, queue: f.InputQueue}
	if f.HoldGroup != 0 {
		in.match = []string{"-m", "devgroup", "--src-group", fmt.Sprintf("%#x", f.HoldGroup)}
	}
	return []queueChain{
		{hook: "PREROUTING", chain: DefaultOutputChain, jumpMatch: []string{"-i", f.Inner}, queue: f.OutputQueue},
		in,
	}, nil
}

// Install installs the rules; idempotent, corrects stale queue numbers in
// place.
func (f *ForwardRules) Install(ctx context.Context) error {
	cs, err := f.chains()
	if err != nil {
		return err
	}
	if err := f.ns().install(ctx, cs); err != nil {
		return fmt.Errorf("forward rules: %w", err)
	}
	return nil
}

// Remove removes the jumps and chains, also when half installed or absent.
func (f *ForwardRules) Remove(ctx context.Context) error {
	cs, err := f.chains()
	if err != nil {
		return err
	}
	if err := f.ns().remove(ctx, cs); err != nil {
		return fmt.Errorf("forward rules: %w", err)
	}
	return nil
}

// Present lists what of the rules is installed; empty means clean.
func (f *ForwardRules) Present(ctx context.Context) ([]string, error) {
	cs, err := f.chains()
	if err != nil {
		return nil, err
	}
	return f.ns().present(ctx, cs)
}
