// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The lab of this package's tests: its own name and subnet so that it does
// not collide with the labs of other test packages running at the same time.
func testLab(t *testing.T) *Lab {
	name, subnet := os.Getenv("LAB_TEST_NAME"), os.Getenv("LAB_TEST_SUBNET")
	if name == "" {
		name = "rrclab"
	}
	if subnet == "" {
		subnet = "10.78.0"
	}
	return Start(t, name, subnet)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// conn is a TCP connection made by `busybox nc` in a lab host.
type conn struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	done  chan error
}

// dial connects; the connection lives until owner's cleanup (owner may be
// a parent of t, so that the connection outlives a subtest).
func dial(t, owner *testing.T, l *Lab, from, ip string, port int) *conn {
	t.Helper()
	cmd := l.Command(context.Background(), from, "busybox", "nc", ip, strconv.Itoa(port))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &conn{cmd: cmd, in: in, lines: make(chan string, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { c.done <- cmd.Wait() }()
	owner.Cleanup(func() { _ = cmd.Process.Kill() })
	return c
}

func (c *conn) roundtrip(msg string, timeout time.Duration) (string, error) {
	if _, err := io.WriteString(c.in, msg); err != nil {
		return "", err
	}
	select {
	case line, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("connection closed")
		}
		return line, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no reply in %v", timeout)
	}
}

func (c *conn) exited() bool {
	select {
	case err := <-c.done:
		c.done <- err
		return true
	default:
		return false
	}
}

// finRst reads the packet counters of the client's FIN and RST rules
// (installed by countFinRst) for segments coming from ip.
func finRst(t *testing.T, l *Lab, host string) (fin, rst int) {
	t.Helper()
	out, err := l.Exec(ctxT(t, 10*time.Second), host, "iptables", "-w", "-nvx", "-L", "INPUT")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, "flags:0x01/0x01"):
			fin += n
		case strings.Contains(line, "flags:0x04/0x04"):
			rst += n
		}
	}
	return fin, rst
}

func countFinRst(t *testing.T, l *Lab, host, from string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	for _, flag := range []string{"FIN", "RST"} {
		if _, err := l.Exec(ctx, host, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "-s", from, "--tcp-flags", flag, flag); err != nil {
			t.Fatal(err)
		}
	}
}

func established(t *testing.T, l *Lab, host, ip string, port int) bool {
	t.Helper()
	out, err := l.Exec(ctxT(t, 10*time.Second), host, "ss", "-Htn", "state", "established", "dst", ip, "dport", "= :"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out) != ""
}

func TestPrerequisitesMessage(t *testing.T) {
	if err := Prerequisites(); err != nil && !strings.Contains(err.Error(), "missing") {
		t.Fatalf("unexpected error text: %v", err)
	}
}

func TestNamesAndAddresses(t *testing.T) {
	l := New("rrcx", "10.79.0")
	cases := []struct{ got, want string }{
		{l.IP("a"), "10.79.0.1"},
		{l.IP("b"), "10.79.0.2"},
		{l.IP("client"), "10.79.0.100"},
		{l.ServiceIP(0), "10.79.0.200"},
		{l.ServiceIP(50), "10.79.0.250"},
		{l.Netns("a"), "/run/netns/rrcx-a"},
		{l.Netns("lan"), "/run/netns/rrcx-lan"},
		{l.Namespace("b"), "rrcx-b"},
		{l.Address("a"), "/run/rrcx/a/containerd.sock"},
		{l.TTRPCAddress("a"), "/run/rrcx/a/containerd.sock.ttrpc"},
		{l.Root("b"), "/var/lib/rrcx/b"},
		{l.State("b"), "/run/rrcx/b"},
		{l.RegistryAddr(), "10.79.0.100:5000"},
		{l.RegistryRef(RedisImage), "10.79.0.100:5000/redis:latest"},
		{l.HostsDir("a"), "/var/lib/rrcx/a/certs.d"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	d := New("", "")
	if d.Name != DefaultName || d.Subnet != DefaultSubnet {
		t.Errorf("defaults: %+v", d)
	}
}

// TestLab exercises the whole lab: up, LAN, containerds and images,
// containers reachable from the client, fail-stop crash (no FIN/RST, no
// process left), restart, down after a crash, down after an interrupted up.
func TestLab(t *testing.T) {
	l := testLab(t)
	top := t
	a, b, client := l.IP("a"), l.IP("b"), l.IP("client")

	t.Run("lan", func(t *testing.T) {
		for _, p := range [][2]string{{"client", a}, {"client", b}, {"a", b}, {"b", client}} {
			if _, err := l.Exec(ctxT(t, 10*time.Second), p[0], "busybox", "ping", "-c", "1", "-W", "2", p[1]); err != nil {
				t.Errorf("%s cannot ping %s: %v", p[0], p[1], err)
			}
		}
		// The root namespace is untouched: no lab interface there.
		out, err := exec.Command("ip", "-o", "link", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "br0") && strings.Contains(string(out), l.Name) {
			t.Errorf("lab interfaces in the root namespace:\n%s", out)
		}
	})

	t.Run("containerd", func(t *testing.T) {
		for _, h := range DaemonHosts {
			ctx := ctxT(t, 20*time.Second)
			if _, err := l.Ctr(ctx, h, "version"); err != nil {
				t.Fatalf("%s: %v", h, err)
			}
			out, err := l.Ctr(ctx, h, "images", "ls", "-q")
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range []string{BusyboxImage, RedisImage, ThreadKVImage} {
				if !strings.Contains(out, img) {
					t.Errorf("%s: image %s missing: %q", h, img, out)
				}
			}
			ns, err := l.Ctr(ctx, h, "namespaces", "ls", "-q")
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(ns) != l.Namespace(h) {
				t.Errorf("%s: namespaces %q, want only %s", h, ns, l.Namespace(h))
			}
		}
		// up is idempotent and quick when up.
		start := time.Now()
		if err := l.Up(ctxT(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		t.Logf("second up: %v", time.Since(start))
	})

	// Containers on a share its network namespace (--net-host).
	ctx := ctxT(t, time.Minute)
	if _, err := l.Ctr(ctx, "a", "run", "-d", "--net-host", "--runtime", "io.containerd.runc.v2",
		BusyboxImage, "echo", "nc", "-ll", "-p", "5000", "-e", "/bin/cat"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ctr(ctx, "a", "run", "-d", "--net-host", "--runtime", "io.containerd.runc.v2", RedisImage, "redis"); err != nil {
		t.Fatal(err)
	}
	// Same container names on b: distinct roots, namespaces and cgroups.
	if _, err := l.Ctr(ctx, "b", "run", "-d", "--net-host", BusyboxImage, "echo", "nc", "-ll", "-p", "5000", "-e", "/bin/cat"); err != nil {
		t.Fatal(err)
	}

	var echoA, redisA, echoB *conn
	t.Run("containers", func(t *testing.T) {
		err := WaitFor(10*time.Second, func() error {
			_, err := l.Exec(ctxT(t, 5*time.Second), "client", "redis-cli", "-h", a, "ping")
			return err
		})
		if err != nil {
			t.Fatalf("redis on a: %v", err)
		}
		if out, _ := l.Exec(ctxT(t, 5*time.Second), "client", "redis-cli", "-h", a, "set", "k", "v"); strings.TrimSpace(out) != "OK" {
			t.Fatalf("redis set: %q", out)
		}
		for _, h := range []string{"a", "b"} {
			err := WaitFor(10*time.Second, func() error {
				_, err := l.Exec(ctxT(t, 5*time.Second), "client", "sh", "-c", "echo x | busybox nc -w 2 "+l.IP(h)+" 5000 | grep -q x")
				return err
			})
			if err != nil {
				t.Fatalf("echo server on %s: %v", h, err)
			}
		}
		echoA = dial(t, top, l, "client", a, 5000)
		if got, err := echoA.roundtrip("hello\n", 5*time.Second); err != nil || got != "hello" {
			t.Fatalf("echo a: %q %v", got, err)
		}
		redisA = dial(t, top, l, "client", a, 6379)
		if got, err := redisA.roundtrip("PING\r\n", 5*time.Second); err != nil || strings.TrimSpace(got) != "+PONG" {
			t.Fatalf("redis a: %q %v", got, err)
		}
		echoB = dial(t, top, l, "client", b, 5000)
		if got, err := echoB.roundtrip("hi b\n", 5*time.Second); err != nil || got != "hi b" {
			t.Fatalf("echo b: %q %v", got, err)
		}
	})
	if t.Failed() {
		return
	}

	countFinRst(t, l, "client", a)

	t.Run("detector", func(t *testing.T) {
		// Control: a server on a that stops normally sends a FIN, and the
		// client's counters see it. Otherwise "no FIN" below proves nothing.
		srv := l.Command(context.Background(), "a", "busybox", "nc", "-l", "-p", "5001", "-e", "/bin/cat")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		var c *conn
		err := WaitFor(5*time.Second, func() error {
			c = dial(t, t, l, "client", a, 5001)
			if _, err := c.roundtrip("x\n", time.Second); err != nil {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		fin0, _ := finRst(t, l, "client")
		_ = srv.Process.Kill()
		err = WaitFor(5*time.Second, func() error {
			if fin, _ := finRst(t, l, "client"); fin <= fin0 {
				return fmt.Errorf("no FIN counted")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Exec(ctxT(t, 5*time.Second), "client", "iptables", "-w", "-Z", "INPUT"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("crash", func(t *testing.T) {
		ino := l.NetnsInode("a")
		if ino == 0 {
			t.Fatal("no netns for a")
		}
		if len(PIDsInNetns(ino)) < 3 {
			t.Fatalf("expected containerd, shims and containers in a's netns, got %v", PIDsInNetns(ino))
		}
		start := time.Now()
		if err := l.Crash(ctxT(t, time.Minute), "a"); err != nil {
			t.Fatal(err)
		}
		t.Logf("crash a: %v", time.Since(start))
		// The client keeps talking; nothing may come back, not even a RST.
		for i := 0; i < 3; i++ {
			_, _ = io.WriteString(echoA.in, "anyone?\n")
			_, _ = io.WriteString(redisA.in, "PING\r\n")
			time.Sleep(300 * time.Millisecond)
		}
		if fin, rst := finRst(t, l, "client"); fin != 0 || rst != 0 {
			t.Errorf("client received FIN=%d RST=%d from crashed host a", fin, rst)
		}
		if echoA.exited() || redisA.exited() {
			t.Errorf("a client connection was closed by the crash")
		}
		for _, port := range []int{5000, 6379} {
			if !established(t, l, "client", a, port) {
				t.Errorf("client connection to a:%d is no longer ESTABLISHED", port)
			}
		}
		if pids := PIDsInNetns(ino); len(pids) > 0 {
			t.Errorf("processes left in a's network namespace: %v", pids)
		}
		if left := l.HostLeftovers("a"); len(left) > 0 {
			t.Errorf("crashed host a left: %v", left)
		}
		// b is unaffected.
		if got, err := echoB.roundtrip("still there\n", 5*time.Second); err != nil || got != "still there" {
			t.Errorf("echo b after crash of a: %q %v", got, err)
		}
		if _, err := l.Ctr(ctxT(t, 10*time.Second), "b", "version"); err != nil {
			t.Errorf("b's containerd: %v", err)
		}
	})

	t.Run("restart", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		if err := l.Restart(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		// The disk survives: images and container records are there,
		// tasks are not.
		out, err := l.Ctr(ctx, "a", "containers", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "redis") || !strings.Contains(out, "echo") {
			t.Errorf("containers after restart: %q", out)
		}
		if out, _ := l.Ctr(ctx, "a", "tasks", "ls", "-q"); strings.TrimSpace(out) != "" {
			t.Errorf("tasks after restart: %q", out)
		}
		if _, err := l.Ctr(ctx, "a", "tasks", "start", "-d", "redis"); err != nil {
			t.Fatal(err)
		}
		err = WaitFor(10*time.Second, func() error {
			_, err := l.Exec(ctxT(t, 5*time.Second), "client", "redis-cli", "-h", a, "ping")
			return err
		})
		if err != nil {
			t.Fatalf("redis on a after restart: %v", err)
		}
	})

	t.Run("down after crash", func(t *testing.T) {
		if err := l.Crash(ctxT(t, time.Minute), "b"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Down(ctxT(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		t.Logf("down: %v", time.Since(start))
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left after down: %v", left)
		}
		if err := l.Down(ctxT(t, time.Minute)); err != nil {
			t.Errorf("second down: %v", err)
		}
	})

	t.Run("down after interrupted up", func(t *testing.T) {
		for _, d := range []time.Duration{300 * time.Millisecond, 900 * time.Millisecond} {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			err := l.Up(ctx)
			cancel()
			t.Logf("up interrupted after %v: %v", d, err)
			if err := l.Down(ctxT(t, time.Minute)); err != nil {
				t.Fatal(err)
			}
			if left := l.Leftovers(); len(left) > 0 {
				t.Errorf("left after down: %v", left)
			}
		}
	})
}
