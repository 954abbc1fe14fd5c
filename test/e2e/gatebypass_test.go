// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// The bypass attempts of TestGateBypass: a long epoch, so that a packet sent
// right after a commit waits several seconds for its release, and the quiet
// time checked after the attempts, well inside it.
const (
	bypassEpoch = 8 * time.Second
	bypassQuiet = 4 * time.Second
	bypassPort  = "9999"
)

// TestGateBypass: a replicated container tries to get output past the gate
// (issue 15, part 6), with gatebypass (./gatebypass) copied into it and run
// by ctr task exec with the container's own capabilities.
//
//   - Service network (gate namespace), CAP_NET_RAW and CAP_NET_ADMIN
//     granted: right after a commit it deletes every netfilter table of its
//     namespace, sends a UDP datagram, and sends IPv4/UDP frames through a
//     packet socket to the gate's MAC and straight to the client's. The
//     client gets nothing until the next epoch is committed, then the
//     routed ones; the frame addressed past the gate never arrives.
//   - Adopted namespace: containerd's default spec (CAP_NET_RAW) is refused
//     naming the capability and the flag; with --cap-drop CAP_NET_RAW it
//     runs, and cannot open a packet socket or touch the gate's rules. A
//     control shows what the refusal prevents: there, a packet socket gets
//     a frame to the client while the gate holds an ordinary datagram.
func TestGateBypass(t *testing.T) {
	rl := startReplicationLab(t, "rrcgate", "10.91.3")
	tool := filepath.Join(rl.dir, "gatebypass")
	build := exec.Command("go", "build", "-o", tool, "github.com/iorrc/rrc/test/e2e/gatebypass")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // static: the image has no C library
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build gatebypass: %v\n%s", err, out)
	}
	t.Run("GateNamespace", func(t *testing.T) { gateNamespaceBypass(t, rl, tool) })
	t.Run("Adopted", func(t *testing.T) { adoptedBypass(t, rl, tool) })
}

func gateNamespaceBypass(t *testing.T, rl replicationLab, tool string) {
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := host{t: t, lab: l, name: "a"}
	const id = "gate1"
	serviceIP, clientIP := l.Subnet+".201", l.IP("client")
	rl.startPair(ctx, t, pairSpec{id: id, image: busybox, serviceIP: serviceIP, listen: l.IP("b") + ":7101",
		// Every tick a checkpoint: the test times its attempts from a commit.
		extra: []string{"--cap-add", "CAP_NET_ADMIN", "--annotation", "io.rrc.epoch=" + bypassEpoch.String(), "--annotation", "io.rrc.skip-idle=false"},
		args:  []string{"sleep", "3600"}})
	pid := taskPid(t, a.must(ctx, "task", "ls"), id)
	copyInto(t, tool, pid)

	// A decoy chain in the container's namespace: its flush must remove it,
	// which shows that the container's CAP_NET_ADMIN works there.
	ctNetns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	nsenter(t, ctNetns, "iptables", "-t", "mangle", "-N", "RRC-DECOY")
	gates, _ := filepath.Glob(filepath.Join(l.State("a"), "rrc", "netns", l.Namespace("a"), id, ".gate", "*"))
	if len(gates) != 1 {
		t.Fatalf("gate namespace of %s: %v, want one", id, gates)
	}
	gateMAC := linkMAC(t, gates[0], "ct0")
	clientMAC := linkMAC(t, l.Netns("client"), "eth0")
	rx := listenUDP(t, l.Netns("client"), "0.0.0.0:"+bypassPort)

	// Right after a commit: the next release is about an epoch away.
	st := waitStatus(t, l, "a", id, "in sync", 10*time.Second, isState(replication.StateInSync))
	e0 := st.Engine.CommittedEpoch
	st = waitStatus(t, l, "a", id, "the next commit", 3*bypassEpoch, func(s status.Published) bool {
		return s.Engine.CommittedEpoch > e0
	})
	committed, sentAt := st.Engine.CommittedEpoch, time.Now()
	to := clientIP + ":" + bypassPort
	for _, try := range [][]string{
		{"flush"},
		{"udp", to, "udp-after-flush"},
		{"raw", "eth0", serviceIP, to, gateMAC, "raw-to-gate"},
		{"raw", "eth0", serviceIP, to, clientMAC, "raw-to-client"},
	} {
		if out, errOut, code := a.ctr(ctx, "", append([]string{"task", "exec", "--exec-id", "bp-" + try[0] + strconv.Itoa(len(try)), id, "/gatebypass"}, try...)...); code != 0 {
			t.Fatalf("gatebypass %s in the container: exit %d: %s%s", strings.Join(try, " "), code, out, errOut)
		}
	}
	if spent := time.Since(sentAt); spent > bypassQuiet {
		t.Fatalf("the attempts took %s, more than the quiet time %s checked after them", spent, bypassQuiet)
	}
	if out := nsenter(t, ctNetns, "iptables", "-t", "mangle", "-S"); strings.Contains(out, "RRC-DECOY") {
		t.Errorf("the container's flush left its namespace's rules:\n%s", out)
	}

	time.Sleep(time.Until(sentAt.Add(bypassQuiet)))
	if got := rx.received(); len(got) > 0 {
		t.Fatalf("the client got %v within %s of a commit (epoch %d), before the next release", got, bypassQuiet, committed)
	}
	err := lab.WaitFor(3*bypassEpoch, func() error {
		got := rx.received()
		if !got["udp-after-flush"].IsZero() && !got["raw-to-gate"].IsZero() {
			return nil
		}
		return fmt.Errorf("received %v", got)
	})
	if err != nil {
		t.Fatalf("the routed attempts never arrived after the release: %v", err)
	}
	// Each arrived only once a later epoch was committed.
	after := waitStatus(t, l, "a", id, "a later commit", 2*time.Second, func(s status.Published) bool {
		return s.Engine.CommittedEpoch > committed
	})
	got := rx.received()
	t.Logf("sent %s after the commit of epoch %d; arrived %s (udp) and %s (raw) after that, epoch %d committed by then",
		sentAt.Format("15:04:05.000"), committed, got["udp-after-flush"].Sub(sentAt).Round(time.Millisecond),
		got["raw-to-gate"].Sub(sentAt).Round(time.Millisecond), after.Engine.CommittedEpoch)
	time.Sleep(time.Second)
	if at, ok := rx.received()["raw-to-client"]; ok {
		t.Errorf("a frame addressed to the client's MAC got past the gate namespace (at %s)", at.Sub(sentAt))
	}
}

func adoptedBypass(t *testing.T, rl replicationLab, tool string) {
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := host{t: t, lab: l, name: "a"}
	ns := cniNetns(t, l, "a", l.Subnet+".211", l.Subnet+".254")
	const id = "adopt1"
	run := func(caps ...string) (string, int) {
		args := append([]string{"run", "-d", "--runtime", rrc, "--with-ns", "network:" + ns,
			"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer=" + l.IP("b") + ":7102"}, caps...)
		out, errOut, code := a.ctr(ctx, "", append(args, busybox, id, "sleep", "3600")...)
		return out + errOut, code
	}
	out, code := run()
	a.ctr(ctx, "", "container", "delete", id)
	if code == 0 {
		a.cleanup(id)
		t.Fatalf("a replicated container in an adopted namespace with containerd's default capabilities (CAP_NET_RAW) was started")
	}
	for _, want := range []string{"CAP_NET_RAW (bounding, effective, permitted)", "packet socket", "--cap-drop CAP_NET_RAW"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	t.Logf("refused: %s", strings.TrimSpace(out))

	if out, code := run("--cap-drop", "CAP_NET_RAW"); code != 0 {
		t.Fatalf("with --cap-drop CAP_NET_RAW: exit %d: %s", code, out)
	}
	t.Cleanup(func() { a.cleanup(id) }) // before cniNetns's, which removes the namespace
	copyInto(t, tool, taskPid(t, a.must(ctx, "task", "ls"), id))
	for _, try := range [][]string{
		{"raw", "eth0", l.Subnet + ".211", l.IP("client") + ":" + bypassPort, "ff:ff:ff:ff:ff:ff", "raw-adopted"},
		{"flush"},
	} {
		out, errOut, code := a.ctr(ctx, "", append([]string{"task", "exec", "--exec-id", "bp-" + try[0], id, "/gatebypass"}, try...)...)
		if code == 0 || !strings.Contains(out+errOut, "operation not permitted") {
			t.Errorf("gatebypass %s in the adopted container without the capabilities: exit %d, want operation not permitted: %s%s", try[0], code, out, errOut)
		}
	}
	if out := ipIn(t, ns, "link", "show", "eth0"); !strings.Contains(out, "eth0") {
		t.Fatalf("adopted eth0: %s", out)
	}
	if out := nsenter(t, ns, "iptables", "-t", "mangle", "-S"); !strings.Contains(out, "-A OUTPUT -j RRC-OUT") {
		t.Errorf("the gate's jump is not in the adopted namespace after the attempts:\n%s", out)
	}

	// Why the refusal: in this namespace a packet socket goes around the
	// gate. The same program run there with the capabilities (from the
	// host) gets a frame to the client at once while an ordinary datagram
	// stays held (the backup is not there, so nothing is released).
	rx := listenUDP(t, l.Netns("client"), "0.0.0.0:"+bypassPort)
	to := l.IP("client") + ":" + bypassPort
	nsenter(t, ns, tool, "udp", to, "udp-adopted")
	nsenter(t, ns, tool, "raw", "eth0", l.Subnet+".211", to, linkMAC(t, l.Netns("client"), "eth0"), "raw-adopted")
	if err := lab.WaitFor(2*time.Second, func() error {
		if _, ok := rx.received()["raw-adopted"]; !ok {
			return fmt.Errorf("received %v", rx.received())
		}
		return nil
	}); err != nil {
		t.Errorf("control: a raw frame from the adopted namespace did not reach the client: %v", err)
	}
	if _, ok := rx.received()["udp-adopted"]; ok {
		t.Errorf("control: an ordinary datagram from the adopted namespace got past its gate with no backup")
	}
}

// copyInto puts the program at path into the root of the container whose
// process is pid, as /gatebypass.
func copyInto(t *testing.T, path string, pid int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/root/gatebypass", b, 0o755); err != nil {
		t.Fatalf("copy gatebypass into the container: %v", err)
	}
}

func nsenter(t *testing.T, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter --net=%s %s: %v\n%s", netns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// linkMAC is the MAC address of link in the network namespace at netns.
func linkMAC(t *testing.T, netns, link string) string {
	t.Helper()
	f := strings.Fields(nsenter(t, netns, "ip", "-br", "link", "show", link))
	if len(f) < 3 {
		t.Fatalf("ip -br link show %s in %s: %v", link, netns, f)
	}
	if _, err := net.ParseMAC(f[2]); err != nil {
		t.Fatalf("MAC of %s in %s: %v", link, netns, err)
	}
	return f[2]
}

// udpReceiver records when each payload first arrived on a UDP socket.
type udpReceiver struct {
	mu  sync.Mutex
	got map[string]time.Time
}

func (r *udpReceiver) received() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// listenUDP receives on addr in the network namespace at netns until the
// test ends.
func listenUDP(t *testing.T, netns, addr string) *udpReceiver {
	t.Helper()
	var c net.PacketConn
	err := launch.InNetns(netns, func() (err error) {
		c, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, netns, err)
	}
	r := &udpReceiver{got: map[string]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			if _, ok := r.got[string(buf[:n])]; !ok {
				r.got[string(buf[:n])] = time.Now()
			}
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return r
}
