// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateLab is three namespaces: a client (10.84.1.2), a gate that forwards
// between up0 (10.84.1.1, toward the client) and ct0 (10.84.2.1), and a
// container (10.84.2.2), as servicenet's gate namespace sits between the
// LAN and a replicated container.
type gateLab struct{ client, gate, container string }

func newGateLab(t *testing.T) gateLab {
	t.Helper()
	names := newNamespaces(t, "nfgt", "c", "g", "k")
	c, g, k := names[0], names[1], names[2]
	sh(t, "ip", "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", g)
	sh(t, "ip", "-n", g, "link", "add", "ct0", "type", "veth", "peer", "name", "eth0", "netns", k)
	for _, a := range [][]string{{c, "eth0", "10.84.1.2/24"}, {g, "up0", "10.84.1.1/24"}, {g, "ct0", "10.84.2.1/24"}, {k, "eth0", "10.84.2.2/24"}} {
		sh(t, "ip", "-n", a[0], "addr", "add", a[2], "dev", a[1])
		sh(t, "ip", "-n", a[0], "link", "set", a[1], "up")
	}
	sh(t, "ip", "-n", c, "route", "add", "default", "via", "10.84.1.1")
	sh(t, "ip", "-n", k, "route", "add", "default", "via", "10.84.2.1")
	sh(t, "ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return gateLab{client: "/var/run/netns/" + c, gate: "/var/run/netns/" + g, container: "/var/run/netns/" + k}
}

// TestKernelInputCapture: in hybrid mode (Path with Tag and Record) every
// input reaches the log before the output it caused, whole and with a
// valid checksum, without passing through the input queue; while the hold
// holds, the kernel queues the input instead, and the capture logs it when
// it is delivered after the release.
func TestKernelInputCapture(t *testing.T) {
	requireKernel(t)
	lab := newGateLab(t)
	var mu sync.Mutex
	var events []string // "in:<payload>" and "out:<payload>", in log order
	payload := func(p []byte) string {
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+20 || p[9] != 6 {
			return ""
		}
		return string(p[ihl+int(p[ihl+12]>>4)*4:])
	}
	var checksumErr error
	var seq uint64
	var gate atomic.Pointer[OutputGate] // set once Open returned; Logged may run before
	path := &Path{
		NetNS:       lab.container,
		Forward:     &Forward{NetNS: lab.gate, Inner: "ct0", Uplink: "up0"},
		OutputQueue: 21, InputQueue: 22,
		Record: func(p []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if !tcpChecksumOK(p) && checksumErr == nil {
				checksumErr = fmt.Errorf("input logged with a bad checksum: % x", p)
			}
			if s := payload(p); s != "" {
				events = append(events, "in:"+s)
			}
			return nil
		},
		Tag: func(pk *Packet) (uint64, error) {
			mu.Lock()
			defer mu.Unlock()
			if s := payload(pk.Payload); s != "" {
				events = append(events, "out:"+s)
			}
			seq++
			return seq, nil
		},
		// Release at once: the test is about what the log sees.
		Logged: func() {
			mu.Lock()
			s := seq
			mu.Unlock()
			if g := gate.Load(); g != nil && s > 0 {
				if err := g.Release(s); err != nil {
					t.Error(err)
				}
			}
		},
	}
	ctx := context.Background()
	g, hold, err := path.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gate.Store(g)
	t.Cleanup(func() {
		if err := path.Close(ctx); err != nil {
			t.Error(err)
		}
	})

	l := listen(t, lab.container, "tcp", "10.84.2.2:7000")
	accepted := acceptOne(t, l)
	client := recvConn(t, dial(lab.client, "10.84.2.2:7000"), "dial")
	server := recvConn(t, accepted, "accept")
	go func() { // answers each request with its upper case
		buf := make([]byte, 64)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			server.Write(bytes.ToUpper(buf[:n]))
		}
	}()
	for _, req := range []string{"ping", "pong"} {
		client.Write([]byte(req))
		if got := string(readFor(client, 4, 2*time.Second)); got != strings.ToUpper(req) {
			t.Fatalf("answer to %q: %q", req, got)
		}
	}

	// Held: the request is queued, neither delivered nor logged.
	if err := hold.Hold(); err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("held"))
	if !waitFor(2*time.Second, func() bool { return hold.Stats().Held >= 1 }) {
		t.Fatal("the request never reached the switched-on input queue")
	}
	if got := readFor(client, 4, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("answered while held: %q", got)
	}
	if err := hold.Drain(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	logged := fmt.Sprint(events)
	mu.Unlock()
	if strings.Contains(logged, "held") {
		t.Fatalf("a held request was logged before its delivery: %s", logged)
	}
	if err := hold.Release(); err != nil {
		t.Fatal(err)
	}
	if got := string(readFor(client, 4, 2*time.Second)); got != "HELD" {
		t.Fatalf("answer after the release: %q", got)
	}
	client.Write([]byte("last"))
	if got := string(readFor(client, 4, 2*time.Second)); got != "LAST" {
		t.Fatalf("answer after the hold: %q", got)
	}

	mu.Lock()
	defer mu.Unlock()
	if want := "[in:ping out:PING in:pong out:PONG in:held out:HELD in:last out:LAST]"; fmt.Sprint(events) != want {
		t.Fatalf("log order %v, want %s", events, want)
	}
	if checksumErr != nil {
		t.Fatal(checksumErr)
	}
	// The held request and at most an acknowledgement or two with it;
	// the rest of the conversation bypassed the queue.
	if st := hold.Stats(); st.Accepted < 1 || st.Accepted > 3 || st.Holds != 1 {
		t.Fatalf("the input queue saw more than the held packet: %+v", st)
	}
}

// tcpChecksumOK verifies an IPv4 TCP packet's checksum (true for anything
// else).
func tcpChecksumOK(p []byte) bool {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != 6 {
		return true
	}
	ihl := int(p[0]&0x0f) * 4
	seg := p[ihl:binary.BigEndian.Uint16(p[2:4])]
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(p[12:20])
	sum += 6 + uint32(len(seg))
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// TestKernelInputCaptureFullRing: inputs the ring had no room for were
// delivered without being logged; the next Drain says so, and so does every
// Drain after it.
func TestKernelInputCaptureFullRing(t *testing.T) {
	requireKernel(t)
	lab := newGateLab(t)
	var logged int
	c, err := OpenInputCapture(lab.gate, "ct0", func([]byte) error { logged++; return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	inNS(t, lab.client, func() error {
		// Unconnected: the container's port unreachable errors do not
		// stop the sending.
		conn, err := net.ListenPacket("udp", "10.84.1.2:0")
		if err != nil {
			return err
		}
		defer conn.Close()
		to := &net.UDPAddr{IP: net.ParseIP("10.84.2.2"), Port: 9}
		for i := range c.frames + 100 {
			if _, err := conn.WriteTo([]byte("x"), to); err != nil {
				return err
			}
			if i%100 == 0 { // within the kernel's backlog of 1,000
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	})
	err = c.Drain()
	if err == nil || !strings.Contains(err.Error(), "ring was full") {
		t.Fatalf("Drain after %d packets into a ring of %d frames: %v (logged %d)", c.frames+100, c.frames, err, logged)
	}
	if logged != c.frames {
		t.Fatalf("logged %d, want the ring's %d", logged, c.frames)
	}
	if err2 := c.Drain(); err2 == nil {
		t.Fatal("a failed capture drained again without an error")
	}
}
