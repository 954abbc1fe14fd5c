// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/prereq"
)

// The kernel tests build two network namespaces joined by a veth:
// ns1 (10.83.0.1, the "container", where rules and queues live) and
// ns2 (10.83.0.2, the client).
const (
	ns1Addr  = "10.83.0.1"
	ns2Addr  = "10.83.0.2"
	outQueue = 11
	inQueue  = 12
)

var nsCounter atomic.Int64 // distinct names for the namespaces of one test binary

// requireKernel stops the test (package prereq), naming what is missing,
// unless it can run with real namespaces, iptables and nfnetlink_queue.
func requireKernel(t testing.TB) {
	t.Helper()
	prereq.Root(t, "kernel test: namespaces, iptables, nfnetlink_queue")
	prereq.Commands(t, "ip", "nsenter", "iptables", "iptables-restore", "ip6tables", "ip6tables-restore")
}

type nsPair struct{ ns1, ns2 string } // paths

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNSPair creates nfqt-<pid>-<n>-{a,b}, removed at cleanup even on failure.
func newNSPair(t testing.TB) nsPair {
	t.Helper()
	base := fmt.Sprintf("nfqt-%d-%d", os.Getpid(), nsCounter.Add(1))
	a, b := base+"-a", base+"-b"
	t.Cleanup(func() {
		for _, n := range []string{a, b} {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", n, err, out)
			}
		}
	})
	sh(t, "ip", "netns", "add", a)
	sh(t, "ip", "netns", "add", b)
	for _, ns := range []string{a, b} { // no IPv6 chatter (MLD, DAD) in the queues
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	sh(t, "ip", "-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b)
	sh(t, "ip", "-n", a, "addr", "add", ns1Addr+"/24", "dev", "v0")
	sh(t, "ip", "-n", b, "addr", "add", ns2Addr+"/24", "dev", "v1")
	for _, ns := range []string{a, b} {
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", a, "link", "set", "v0", "up")
	sh(t, "ip", "-n", b, "link", "set", "v1", "up")
	return nsPair{ns1: "/var/run/netns/" + a, ns2: "/var/run/netns/" + b}
}

// container is ns1 with both queues bound, the gate and the input hold
// running, and the rules installed.
type container struct {
	gate  *OutputGate
	hold  *InputHold
	out   *Queue
	in    *Queue
	rules *Rules
	stop  func() // stops the gate and the hold and closes the queues
}

func startContainer(t testing.TB, ns string, opts QueueOptions) *container {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, err := OpenQueue(ctx, ns, outQueue, opts)
	if err != nil {
		t.Fatal(err)
	}
	in, err := OpenQueue(ctx, ns, inQueue, QueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &container{out: out, in: in, gate: NewOutputGate(out, discardLog()), hold: NewInputHold(in, discardLog())}
	gateDone, holdDone := make(chan error, 1), make(chan error, 1)
	go func() { gateDone <- c.gate.Run(ctx) }()
	go func() { holdDone <- c.hold.Run(ctx) }()
	var stopped atomic.Bool
	c.stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-gateDone; err != nil {
			t.Errorf("gate: %v", err)
		}
		if err := <-holdDone; err != nil {
			t.Errorf("input hold: %v", err)
		}
		out.Close()
		in.Close()
	}
	t.Cleanup(c.stop)
	c.rules = &Rules{NetNS: ns, OutputQueue: outQueue, InputQueue: inQueue}
	if err := c.rules.Install(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// inNS runs fn in the namespace, failing the test on error.
func inNS(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := launch.InNetns(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func listen(t testing.TB, ns, network, addr string) (l net.Listener) {
	t.Helper()
	inNS(t, ns, func() (err error) { l, err = net.Listen(network, addr); return })
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects from ns in the background (the SYN-ACK may be held).
func dial(ns, addr string) <-chan net.Conn {
	c := make(chan net.Conn, 1)
	go func() {
		var conn net.Conn
		// A failure leaves conn nil, which the caller reports.
		_ = launch.InNetns(ns, func() (err error) {
			conn, err = net.DialTimeout("tcp", addr, 10*time.Second)
			return
		})
		c <- conn
	}()
	return c
}

// readFor reads from conn until want bytes came or d passed.
func readFor(conn net.Conn, want int, d time.Duration) []byte {
	var got bytes.Buffer
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for got.Len() < want {
		n, err := conn.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return got.Bytes()
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
