// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/prereq"
)

// requireRoot stops tests that make namespaces, interfaces and mounts
// without root (package prereq).
func requireRoot(t *testing.T) {
	t.Helper()
	prereq.Root(t, "CAP_SYS_ADMIN for namespaces and mounts, CAP_NET_ADMIN for interfaces")
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// scratchNetns makes a network namespace bind-mounted at dir/name, removed
// at cleanup.
func scratchNetns(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := newNetnsFile(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deleteInterfaces(p); err != nil {
			t.Errorf("cleanup %s: %v", p, err)
		}
		if err := removeNetnsFile(p); err != nil {
			t.Errorf("cleanup %s: %v", p, err)
		}
	})
	return p
}

// testHandle opens a netlink handle in the namespace at path, closed at
// cleanup.
func testHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	h, err := handleAt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func mustUp(t *testing.T, h *netlink.Handle, name string) {
	t.Helper()
	if err := h.LinkSetUp(mustLink(t, h, name)); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

func isUp(l netlink.Link) bool { return l.Attrs().RawFlags&unix.IFF_UP != 0 }

// arpCapture receives the ARP frames arriving on one interface.
type arpCapture struct{ fd int }

func captureARP(t *testing.T, nsPath, ifName string) *arpCapture {
	t.Helper()
	idx := mustLink(t, testHandle(t, nsPath), ifName).Attrs().Index
	fd := -1
	err := launch.InNetns(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherTypeARP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherTypeARP), Ifindex: idx})
	})
	if err != nil {
		t.Fatalf("capture ARP on %s: %v", ifName, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &arpCapture{fd: fd}
}

// arpSeen is one captured ARP frame, decoded.
type arpSeen struct {
	op       uint16
	ethSrc   net.HardwareAddr
	senderHW net.HardwareAddr
	senderIP net.IP
	targetIP net.IP
}

func (a arpSeen) String() string {
	return fmt.Sprintf("op %d from %s: %s is at %s (target %s)", a.op, a.ethSrc, a.senderIP, a.senderHW, a.targetIP)
}

// collect reads frames for d.
func (c *arpCapture) collect(t *testing.T, d time.Duration) []arpSeen {
	t.Helper()
	var out []arpSeen
	deadline := time.Now().Add(d)
	buf := make([]byte, 2048)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return out
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		if n < 42 || binary.BigEndian.Uint16(buf[12:14]) != etherTypeARP {
			continue
		}
		a := buf[14:n]
		out = append(out, arpSeen{
			op:       binary.BigEndian.Uint16(a[6:8]),
			ethSrc:   append(net.HardwareAddr(nil), buf[6:12]...),
			senderHW: append(net.HardwareAddr(nil), a[8:14]...),
			senderIP: append(net.IP(nil), a[14:18]...),
			targetIP: append(net.IP(nil), a[24:28]...),
		})
	}
}

// checkGARP asserts that frames hold, from mac for ip, between min and max
// requests and as many replies, all gratuitous (sender = target). One
// announcement may be lost on a loaded machine (the schedule repeats for
// that reason), so tests allow one less than the schedule sends.
func checkGARP(t *testing.T, frames []arpSeen, mac net.HardwareAddr, ip net.IP, min, max int) {
	t.Helper()
	var req, rep int
	for _, f := range frames {
		if f.ethSrc.String() != mac.String() || !f.senderIP.Equal(ip) {
			continue
		}
		if f.senderHW.String() != mac.String() || !f.targetIP.Equal(ip) {
			t.Errorf("not a gratuitous ARP: %s", f)
		}
		switch f.op {
		case arpRequest:
			req++
		case arpReply:
			rep++
		}
	}
	if req < min || req > max || rep < min || rep > max {
		t.Errorf("saw %d requests and %d replies announcing %s at %s, want %d-%d each; frames: %v", req, rep, ip, mac, min, max, frames)
	}
}

// checkThreadsNetns asserts that every thread of this process, the main
// thread included, is in the network namespace want (no setns leaked to a
// reused or parked thread).
func checkThreadsNetns(t *testing.T, want string) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread ended
		}
		if got != want {
			t.Errorf("thread %s is in %s, not %s", task.Name(), got, want)
		}
	}
}

// threadNetns names the network namespace of the calling thread.
func threadNetns(t *testing.T) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// checkNothingLeft asserts that dir holds no file and no mount but its own
// (released at cleanup).
func checkNothingLeft(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
	mps, err := mountPointsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp != dir {
			t.Errorf("left behind: mount %s", mp)
		}
	}
}

// releaseAtCleanup undoes prepareDir on dir at cleanup.
func releaseAtCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		if err := ReleaseDir(dir); err != nil {
			t.Errorf("release %s: %v", dir, err)
		}
		if mps, _ := mountPointsUnder(dir); len(mps) > 0 {
			t.Errorf("mounts left under %s: %s", dir, strings.Join(mps, ", "))
		}
	})
}
