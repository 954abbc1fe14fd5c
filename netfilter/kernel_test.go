// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/test/prereq"
)

func acceptOne(t *testing.T, l net.Listener) <-chan net.Conn {
	c := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			c <- conn
		}
	}()
	return c
}

func recvConn(t *testing.T, c <-chan net.Conn, what string) net.Conn {
	t.Helper()
	select {
	case conn := <-c:
		if conn == nil {
			t.Fatalf("%s: failed", what)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: timed out", what)
	}
	return nil
}

func TestKernelGateHoldsUntilRelease(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	c := startContainer(t, p.ns1, QueueOptions{})
	l := listen(t, p.ns1, "tcp", ns1Addr+":7000")
	accepted := acceptOne(t, l)
	dialed := dial(p.ns2, ns1Addr+":7000")

	// Epoch 1: the SYN-ACK is held, so the client cannot connect.
	if !waitFor(2*time.Second, func() bool { return c.gate.Stats().Held >= 1 }) {
		t.Fatal("the SYN-ACK never reached the gate")
	}
	select {
	case <-dialed:
		t.Fatal("client connected before epoch 1 was released")
	case <-time.After(100 * time.Millisecond):
	}
	if e := c.gate.Seal(); e != 1 {
		t.Fatalf("Seal = %d", e)
	}
	if err := c.gate.Release(1); err != nil {
		t.Fatal(err)
	}
	client := recvConn(t, dialed, "dial after Release(1)")
	server := recvConn(t, accepted, "accept")

	// "A" in epoch 2, "B" in epoch 3: Release(2) lets out "A" only.
	server.Write([]byte("A"))
	if !waitFor(2*time.Second, func() bool { return c.gate.Stats().Held >= 1 }) {
		t.Fatal(`"A" never reached the gate`)
	}
	if got := readFor(client, 1, 150*time.Millisecond); len(got) != 0 {
		t.Fatalf("client got %q before any release", got)
	}
	if e := c.gate.Seal(); e != 2 {
		t.Fatalf("Seal = %d", e)
	}
	server.Write([]byte("B"))
	time.Sleep(20 * time.Millisecond)
	if err := c.gate.Release(2); err != nil {
		t.Fatal(err)
	}
	if got := string(readFor(client, 2, 300*time.Millisecond)); got != "A" {
		t.Fatalf("after Release(2) the client got %q, want %q", got, "A")
	}
	if err := c.gate.Release(3); err == nil {
		t.Fatal("Release of the open epoch succeeded")
	}
	c.gate.Seal()
	if err := c.gate.Release(3); err != nil {
		t.Fatal(err)
	}
	if got := string(readFor(client, 1, 2*time.Second)); got != "B" {
		t.Fatalf("after Release(3) the client got %q, want %q", got, "B")
	}

	// Degraded mode passes packets straight through.
	if err := c.gate.ReleaseAll(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	server.Write([]byte("C"))
	if got := string(readFor(client, 1, 2*time.Second)); got != "C" {
		t.Fatalf("in pass-through the client got %q", got)
	}
	st := c.gate.Stats()
	t.Logf("pass-through reply in %v; gate %+v", time.Since(start), st)
	if !st.PassThrough || st.Held != 0 || st.Released < 4 || st.Overruns != 0 || st.Rejected != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// queueProc is queue num's line of /proc/net/netfilter/nfnetlink_queue in ns.
type queueProc struct{ total, dropped, userDropped int }

func readQueueProc(t *testing.T, ns string, num uint16) queueProc {
	t.Helper()
	var data []byte
	inNS(t, ns, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
		return
	})
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == strconv.Itoa(int(num)) {
			var q queueProc
			q.total, _ = strconv.Atoi(f[2])
			q.dropped, _ = strconv.Atoi(f[5])
			q.userDropped, _ = strconv.Atoi(f[6])
			return q
		}
	}
	t.Fatalf("queue %d not in %q", num, data)
	return queueProc{}
}

// A full queue drops (fail-open is off), and held datagrams come out in order.
func TestKernelGateOrderAndFullQueueDrops(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	const maxLen = 8
	c := startContainer(t, p.ns1, QueueOptions{MaxLen: maxLen})
	var rx net.PacketConn
	inNS(t, p.ns2, func() (err error) { rx, err = net.ListenPacket("udp", ns2Addr+":7001"); return })
	defer rx.Close()
	var tx net.Conn
	inNS(t, p.ns1, func() (err error) { tx, err = net.Dial("udp", ns2Addr+":7001"); return })
	defer tx.Close()
	for i := 0; i < 20; i++ {
		tx.Write([]byte(strconv.Itoa(i)))
	}
	if !waitFor(2*time.Second, func() bool { return c.gate.Stats().Held == maxLen }) {
		t.Fatalf("held %d, want %d", c.gate.Stats().Held, maxLen)
	}
	rx.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	buf := make([]byte, 100)
	if n, _, err := rx.ReadFrom(buf); err == nil {
		t.Fatalf("received %q while held", buf[:n])
	}
	if qp := readQueueProc(t, p.ns1, outQueue); qp.total != maxLen || qp.dropped != 20-maxLen {
		t.Fatalf("kernel queue: %d queued, %d dropped; want %d, %d", qp.total, qp.dropped, maxLen, 20-maxLen)
	}
	c.gate.Seal()
	if err := c.gate.Release(1); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := rx.ReadFrom(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7]" {
		t.Fatalf("received %v, want the first %d datagrams in order", got, maxLen)
	}
}

// When the gate stops with packets held, they are dropped, and so is what
// the container sends while no gate is bound; TCP retransmits get the data
// through once a gate is back.
func TestKernelGateFailsClosed(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	c := startContainer(t, p.ns1, QueueOptions{})
	c.gate.ReleaseAll() // let the handshake through
	l := listen(t, p.ns1, "tcp", ns1Addr+":7002")
	accepted := acceptOne(t, l)
	client := recvConn(t, dial(p.ns2, ns1Addr+":7002"), "dial")
	server := recvConn(t, accepted, "accept")
	c.gate.Resume()

	server.Write([]byte("X"))
	if !waitFor(2*time.Second, func() bool { return c.gate.Stats().Held >= 1 }) {
		t.Fatal(`"X" never reached the gate`)
	}
	c.stop() // the gate process "dies": queues closed with "X" held
	if st := c.gate.Stats(); st.Dropped < 1 || st.Held != 0 {
		t.Fatalf("stats after stop %+v", st)
	}
	if err := c.gate.Release(1); !errors.Is(err, ErrStopped) {
		t.Fatalf("Release after stop: %v", err)
	}
	server.Write([]byte("Y")) // no queue bound: dropped
	if got := readFor(client, 2, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("client got %q from a dead gate", got)
	}
	if left, err := c.rules.Present(context.Background()); err != nil || len(left) == 0 {
		t.Fatalf("rules should still be installed: %v %v", left, err)
	}

	// A new gate (same queues; Install again is a no-op) passes through.
	c2 := startContainer(t, p.ns1, QueueOptions{})
	start := time.Now()
	c2.gate.ReleaseAll()
	if got := string(readFor(client, 2, 8*time.Second)); got != "XY" {
		t.Fatalf("after a new gate the client got %q, want XY", got)
	}
	t.Logf("TCP retransmission delivered the dropped data %v after the new gate", time.Since(start))
}

func tcpRetrans(t *testing.T, conn net.Conn) uint32 {
	t.Helper()
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info.Total_retrans
}

// A request sent during a freeze is held, not dropped, and answered right
// after Release, without a retransmission timeout.
func TestKernelInputHold(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	c := startContainer(t, p.ns1, QueueOptions{})
	c.gate.ReleaseAll()
	l := listen(t, p.ns1, "tcp", ns1Addr+":7003")
	accepted := acceptOne(t, l)
	client := recvConn(t, dial(p.ns2, ns1Addr+":7003"), "dial")
	server := recvConn(t, accepted, "accept")
	go func() { // echo
		buf := make([]byte, 100)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			server.Write(buf[:n])
		}
	}()
	client.Write([]byte("warm"))
	if got := string(readFor(client, 4, 2*time.Second)); got != "warm" {
		t.Fatalf("echo %q", got)
	}

	if err := c.hold.Hold(); err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("ping"))
	if !waitFor(time.Second, func() bool { return c.hold.Stats().Held >= 1 }) {
		t.Fatal("the request never reached the input hold")
	}
	if got := readFor(client, 4, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("reply %q during the hold", got)
	}
	start := time.Now()
	if err := c.hold.Release(); err != nil {
		t.Fatal(err)
	}
	got := string(readFor(client, 4, 2*time.Second))
	lat := time.Since(start)
	retrans := tcpRetrans(t, client)
	t.Logf("reply %v after Release; client retransmissions %d; hold %+v", lat, retrans, c.hold.Stats())
	if got != "ping" {
		t.Fatalf("reply %q", got)
	}
	if retrans != 0 || lat > 150*time.Millisecond {
		t.Fatalf("reply took %v with %d retransmissions: the held request was lost, not held", lat, retrans)
	}
}

func TestKernelQueueBusy(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	ctx := context.Background()
	q, err := OpenQueue(ctx, p.ns1, 3, QueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := OpenQueue(ctx, p.ns1, 3, QueueOptions{}); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "bound by another socket") {
		t.Fatalf("second bind: %v, want EPERM", err)
	}
	q2, err := OpenQueue(ctx, p.ns2, 3, QueueOptions{}) // queue numbers are per namespace
	if err != nil {
		t.Fatal(err)
	}
	q2.Close()
	// ReadBatch returns when its context ends.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := q.ReadBatch(cctx, make([]Packet, 4)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadBatch: %v", err)
	}
}

func TestKernelRules(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	ctx := context.Background()
	r := &Rules{NetNS: p.ns1, OutputQueue: 5, InputQueue: 6}
	for i := 0; i < 2; i++ {
		if err := r.Install(ctx); err != nil {
			t.Fatal(err)
		}
	}
	left, err := r.Present(ctx)
	if err != nil || len(left) != 12 {
		t.Fatalf("after two installs: %d lines %q: %v", len(left), left, err)
	}
	joined := strings.Join(left, "\n")
	for _, want := range []string{
		"iptables: -A OUTPUT -j RRC-OUT", "ip6tables: -A INPUT -j RRC-IN",
		"-A RRC-OUT ! -o lo -j NFQUEUE --queue-num 5", "-A RRC-IN ! -i lo -j NFQUEUE --queue-num 6",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing %q in\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "bypass") {
		t.Errorf("queue bypass in rules:\n%s", joined)
	}
	// A stale installation with other queue numbers is corrected in place.
	r2 := &Rules{NetNS: p.ns1, OutputQueue: 7, InputQueue: 8}
	if err := r2.Install(ctx); err != nil {
		t.Fatal(err)
	}
	left, _ = r2.Present(ctx)
	if joined := strings.Join(left, "\n"); len(left) != 12 || !strings.Contains(joined, "--queue-num 7") || strings.Contains(joined, "--queue-num 5") {
		t.Fatalf("after reinstall:\n%s", joined)
	}
	if err := r2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	// Half installed: a chain, a duplicated jump, no input chain.
	sh(t, "nsenter", "--net="+p.ns1, "iptables", "-t", "mangle", "-N", "RRC-OUT")
	sh(t, "nsenter", "--net="+p.ns1, "iptables", "-t", "mangle", "-A", "OUTPUT", "-j", "RRC-OUT")
	sh(t, "nsenter", "--net="+p.ns1, "iptables", "-t", "mangle", "-A", "OUTPUT", "-j", "RRC-OUT")
	if left, _ := r.Present(ctx); len(left) != 3 {
		t.Fatalf("half installed: %q", left)
	}
	for i := 0; i < 2; i++ {
		if err := r.Remove(ctx); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if left, _ := r.Present(ctx); len(left) != 0 {
		t.Fatalf("left after remove: %q", left)
	}
	// Input only (output gated on the host side), removed by a full Rules.
	in := &Rules{NetNS: p.ns1, InputQueue: 6, NoOutput: true}
	if err := in.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := r.Present(ctx); len(left) != 6 || strings.Contains(strings.Join(left, "\n"), "RRC-OUT") {
		t.Fatalf("input only: %q", left)
	}
	if err := r.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}

// An overrun of the socket's receive buffer is reported, and the packets the
// kernel could not report are dropped, not accepted.
func TestKernelOverrunReported(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	ctx := context.Background()
	q, err := OpenQueue(ctx, p.ns1, outQueue, QueueOptions{RcvBuf: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	in, err := OpenQueue(ctx, p.ns1, inQueue, QueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := (&Rules{NetNS: p.ns1, OutputQueue: outQueue, InputQueue: inQueue}).Install(ctx); err != nil {
		t.Fatal(err)
	}
	var rx net.PacketConn
	inNS(t, p.ns2, func() (err error) { rx, err = net.ListenPacket("udp", ns2Addr+":7004"); return })
	defer rx.Close()
	var tx net.Conn
	inNS(t, p.ns1, func() (err error) { tx, err = net.Dial("udp", ns2Addr+":7004"); return })
	defer tx.Close()
	const sent = 50
	for i := 0; i < sent; i++ {
		tx.Write(make([]byte, 200))
	}
	got, overrun := 0, false
	batch := make([]Packet, 8)
	for {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		n, err := q.ReadBatch(rctx, batch)
		cancel()
		got += n
		if IsOverrun(err) {
			overrun = true
		} else if err != nil {
			break
		}
	}
	userDropped := readQueueProc(t, p.ns1, outQueue).userDropped
	t.Logf("read %d of %d packets; overrun reported %v; kernel user_dropped %d", got, sent, overrun, userDropped)
	if !overrun || got >= sent || userDropped != sent-got {
		t.Fatalf("overrun %v, read %d of %d, user_dropped %d", overrun, got, sent, userDropped)
	}
	rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := rx.ReadFrom(make([]byte, 300)); err == nil {
		t.Fatal("a packet got out")
	}
}

// newNamespaces adds a network namespace <prefix>-<pid>-<n>-<suffix> per
// suffix, IPv6 off (no RS/MLD/DAD chatter) and loopback up, removed at
// cleanup even on failure; it returns their names.
func newNamespaces(t *testing.T, prefix string, suffixes ...string) []string {
	t.Helper()
	base := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nsCounter.Add(1))
	var names []string
	for _, x := range suffixes {
		names = append(names, base+"-"+x)
	}
	t.Cleanup(func() {
		for _, n := range names {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", n, err, out)
			}
		}
	})
	for _, n := range names {
		sh(t, "ip", "netns", "add", n)
		sh(t, "ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		sh(t, "ip", "-n", n, "link", "set", "lo", "up")
	}
	return names
}

// newBridgedTrio builds a host namespace with a bridge and two namespaces
// attached to it by veths: the container (10.83.0.1, host end hc0) and a
// client (10.83.0.2, host end hp0).
func newBridgedTrio(t *testing.T) (host, ctr, peer string) {
	t.Helper()
	names := newNamespaces(t, "nfqt", "h", "c", "p")
	h := names[0]
	sh(t, "ip", "netns", "exec", h, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1")
	sh(t, "ip", "-n", h, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", h, "link", "set", "br0", "up")
	for i, n := range names[1:] {
		port := []string{"hc0", "hp0"}[i]
		sh(t, "ip", "-n", h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n)
		sh(t, "ip", "-n", h, "link", "set", port, "master", "br0")
		sh(t, "ip", "-n", h, "link", "set", port, "up")
		sh(t, "ip", "-n", n, "addr", "add", []string{ns1Addr, ns2Addr}[i]+"/24", "dev", "eth0")
		sh(t, "ip", "-n", n, "link", "set", "eth0", "up")
	}
	return "/var/run/netns/" + names[0], "/var/run/netns/" + names[1], "/var/run/netns/" + names[2]
}

// The output gate fed from the host end of a bridged veth holds and releases
// in order, fails closed without a queue, and its rules come off cleanly.
func TestKernelHostOutputRules(t *testing.T) {
	requireKernel(t)
	prereq.Path(t, "/proc/sys/net/bridge/bridge-nf-call-iptables", "kernel module br_netfilter")
	host, ctr, peer := newBridgedTrio(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hr := &HostOutputRules{NetNS: host, Port: "hc0", Bridged: true, Queue: 21}
	for i := 0; i < 2; i++ {
		if err := hr.Install(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := hr.Present(ctx); len(left) != 6 || !strings.Contains(strings.Join(left, "\n"), "-A PREROUTING -m physdev --physdev-in hc0 -j RRC-O-hc0") {
		t.Fatalf("installed: %q", left)
	}
	var rx net.PacketConn
	inNS(t, peer, func() (err error) { rx, err = net.ListenPacket("udp", ns2Addr+":7005"); return })
	defer rx.Close()
	var tx net.Conn
	inNS(t, ctr, func() (err error) { tx, err = net.Dial("udp", ns2Addr+":7005"); return })
	defer tx.Close()
	buf := make([]byte, 100)
	// No queue bound yet: dropped.
	tx.Write([]byte("lost"))
	rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := rx.ReadFrom(buf); err == nil {
		t.Fatalf("received %q with no queue bound", buf[:n])
	}
	q, err := OpenQueue(ctx, host, 21, QueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	g := NewOutputGate(q, discardLog())
	go g.Run(ctx)
	for i := 0; i < 5; i++ {
		tx.Write([]byte(strconv.Itoa(i)))
	}
	if !waitFor(2*time.Second, func() bool { return g.Stats().Held == 5 }) {
		t.Fatalf("held %d", g.Stats().Held)
	}
	rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := rx.ReadFrom(buf); err == nil {
		t.Fatalf("received %q while held", buf[:n])
	}
	g.Release(g.Seal())
	var got []string
	for len(got) < 5 {
		rx.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := rx.ReadFrom(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
	}
	if fmt.Sprint(got) != "[0 1 2 3 4]" {
		t.Fatalf("received %v", got)
	}
	for i := 0; i < 2; i++ {
		if err := hr.Remove(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := hr.Present(ctx); len(left) != 0 {
		t.Fatalf("left: %q", left)
	}
}

// TestKernelRewrite: a packet accepted with new content (VerdictPayload)
// leaves, or arrives, with that content: the output gate's and the input
// hold's rewrites, on UDP whose payload they turn to upper case.
func TestKernelRewrite(t *testing.T) {
	requireKernel(t)
	p := newNSPair(t)
	c := startContainer(t, p.ns1, QueueOptions{})
	upper := func(pkt []byte) bool {
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl+8 || pkt[9] != 17 {
			return false
		}
		copy(pkt[ihl+8:], strings.ToUpper(string(pkt[ihl+8:])))
		pkt[ihl+6], pkt[ihl+7] = 0, 0 // no UDP checksum: IPv4 allows it
		return true
	}
	var srv net.PacketConn
	inNS(t, p.ns1, func() (err error) { srv, err = net.ListenPacket("udp4", ns1Addr+":7010"); return })
	defer srv.Close()
	go func() { // echo
		buf := make([]byte, 100)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:n], from) // a lost echo fails the test
		}
	}()
	var cl net.Conn
	inNS(t, p.ns2, func() (err error) { cl, err = net.Dial("udp4", ns1Addr+":7010"); return })
	defer cl.Close()
	echo := func(msg string) string {
		cl.Write([]byte(msg))
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 100)
		n, err := cl.Read(b)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b[:n])
	}
	c.gate.SetRewrite(upper)
	if err := c.gate.ReleaseAll(); err != nil {
		t.Fatal(err)
	}
	if got := echo("out"); got != "OUT" {
		t.Errorf("output rewritten: %q", got)
	}
	c.gate.SetRewrite(nil)
	if got := echo("plain"); got != "plain" {
		t.Errorf("without a rewrite: %q", got)
	}
	c.hold.SetRewrite(upper)
	if got := echo("in"); got != "IN" {
		t.Errorf("input rewritten: %q", got)
	}
}
