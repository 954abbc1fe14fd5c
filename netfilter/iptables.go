// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/iorrc/rrc/runtime/launch"
)

// rulesTable is where every rule goes: the mangle table's hooks run before
// the filter table's, so an ACCEPT in a filter chain cannot let a packet
// skip a queue, and after conntrack, so reinjected packets need no special
// treatment.
const rulesTable = "mangle"

// queueChain is one dedicated chain that sends packets to a queue, and the
// jump to it from a built-in chain:
//
//	-N chain; -A chain match... -j NFQUEUE --queue-num queue
//	-I hook 1 jumpMatch... -j chain
//
// Never --queue-bypass: with no queue bound, packets are dropped.
type queueChain struct {
	hook      string
	chain     string
	jumpMatch []string
	match     []string
	queue     uint16
}

func (c queueChain) jumpArgs(op string) []string {
	args := []string{"-t", rulesTable, op, c.hook}
	if op == "-I" {
		args = append(args, "1")
	}
	args = append(args, c.jumpMatch...)
	return append(args, "-j", c.chain)
}

// iptablesNS runs iptables and ip6tables in one network namespace.
type iptablesNS struct {
	netns  string // "" = the caller's
	noIPv6 bool
	launch launch.Launcher // nil: os/exec
}

func (n iptablesNS) families() []string {
	if n.noIPv6 {
		return []string{"iptables"}
	}
	return []string{"iptables", "ip6tables"}
}

func (n iptablesNS) exec(ctx context.Context, stdin []byte, tool string, args ...string) (string, error) {
	name := tool
	if n.netns != "" {
		args = append([]string{"--net=" + n.netns, tool}, args...)
		name = "nsenter"
	}
	return launch.Command(ctx, n.launch, stdin, name, args...)
}

// install is idempotent. The chains' contents are replaced atomically
// (iptables-restore --noflush declares, and so flushes, them in one
// transaction), so a stale chain from a crashed run, e.g. with another queue
// number, is corrected without a moment where packets pass ungated; then the
// jumps are added where missing.
func (n iptablesNS) install(ctx context.Context, chains []queueChain) error {
	for _, fam := range n.families() {
		var script strings.Builder
		fmt.Fprintf(&script, "*%s\n", rulesTable)
		for _, c := range chains {
			fmt.Fprintf(&script, ":%s - [0:0]\n", c.chain)
		}
		for _, c := range chains {
			fmt.Fprintf(&script, "-A %s %s -j NFQUEUE --queue-num %d\n", c.chain, strings.Join(c.match, " "), c.queue)
		}
		script.WriteString("COMMIT\n")
		if _, err := n.exec(ctx, []byte(script.String()), fam+"-restore", "--noflush"); err != nil {
			return fmt.Errorf("install %s chains: %w", fam, err)
		}
		for _, c := range chains {
			if _, err := n.exec(ctx, nil, fam, c.jumpArgs("-C")...); err == nil {
				continue
			}
			if _, err := n.exec(ctx, nil, fam, c.jumpArgs("-I")...); err != nil {
				return fmt.Errorf("install %s jump %s -> %s: %w", fam, c.hook, c.chain, err)
			}
		}
	}
	return nil
}

// remove deletes the jumps (every copy) and the chains. It works on a
// partial installation and when nothing is installed, and fails only if
// something is still present afterwards.
func (n iptablesNS) remove(ctx context.Context, chains []queueChain) error {
	var errs []error
	for _, fam := range n.families() {
		for _, c := range chains {
			for i := 0; i < 64; i++ { // duplicates of the jump, if any
				if _, err := n.exec(ctx, nil, fam, c.jumpArgs("-D")...); err != nil {
					break // none left (or the chain is gone)
				}
			}
		}
		for _, c := range chains {
			if _, err := n.exec(ctx, nil, fam, "-t", rulesTable, "-F", c.chain); err != nil {
				errs = append(errs, err) // usually "No chain": fine if present agrees
				continue
			}
			if _, err := n.exec(ctx, nil, fam, "-t", rulesTable, "-X", c.chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	left, err := n.present(ctx, chains)
	if err != nil {
		return fmt.Errorf("remove rules: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("remove rules: still present: %s: %w", strings.Join(left, "; "), errors.Join(errs...))
	}
	return nil
}

// present lists the rules that define, fill or jump to the chains, whatever
// their queue numbers and matches, as "iptables: -A OUTPUT -j RRC-OUT".
func (n iptablesNS) present(ctx context.Context, chains []queueChain) ([]string, error) {
	names := map[string]bool{}
	for _, c := range chains {
		names[c.chain] = true
	}
	var found []string
	for _, fam := range n.families() {
		listing, err := n.exec(ctx, nil, fam, "-t", rulesTable, "-S")
		if err != nil {
			return nil, fmt.Errorf("list %s rules: %w", fam, err)
		}
		for _, line := range strings.Split(string(listing), "\n") {
			f := strings.Fields(line)
			for i := 1; i < len(f); i++ {
				if names[f[i]] && (f[i-1] == "-N" || f[i-1] == "-A" || f[i-1] == "-j") {
					found = append(found, fam+": "+strings.TrimSpace(line))
					break
				}
			}
		}
	}
	return found, nil
}
