// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/lab"
)

// TestCheckpointRestoreRedis checkpoints Redis (run by containerd on lab host
// a) several times while a client on the lab's client host keeps one TCP
// connection open and increments a counter; then crashes host a (fail-stop),
// restores the last checkpoint with runc restore into a's fresh network
// namespace, and checks that the counter, the writable layer and the client's
// TCP connection all survived, and that a write made after the last
// checkpoint is gone. With full dumps, and with incremental ones (the last
// checkpoint then is a merged image).
func TestCheckpointRestoreRedis(t *testing.T) {
	t.Run("full", func(t *testing.T) { checkpointRestoreRedis(t, false) })
	t.Run("incremental", func(t *testing.T) { checkpointRestoreRedis(t, true) })
}

func checkpointRestoreRedis(t *testing.T, incremental bool) {
	l := testLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	const id = "ckpt1"
	ip := runRedis(ctx, t, l, id)
	// A change in the writable layer, to be carried by the checkpoint.
	if _, err := l.Ctr(ctx, "a", "task", "exec", "--exec-id", "mark", id, "busybox", "sh", "-c", "echo epoch-data >/marker"); err != nil {
		t.Fatalf("write marker: %v", err)
	}

	nc, err := lab.DialInNetns(l.Netns("client"), ip+":6379")
	if err != nil {
		t.Fatalf("connect from client: %v", err)
	}
	defer nc.Close()
	conn := lab.NewRedisConn(nc)

	cfg := CheckpointerConfig{
		RuncRoot:          "/run/containerd/runc/" + l.Namespace("a"),
		ID:                id,
		CRIU:              CRIUCommand{Argv: []string{"nsenter", "--net=" + l.Netns("a"), "criu"}},
		Dump:              FastDumpOptions(),
		CaptureRootfsDiff: true,
	}
	if incremental {
		cfg.Memory = memoryTracking(t)
	}
	c, err := NewCheckpointer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close checkpointer: %v", err)
		}
	})
	st := c.State()
	images := imageTmpfs(t)
	const epochs = 5
	var last string
	for i := 1; i <= epochs; i++ {
		if got, err := conn.Do("INCR", "counter"); err != nil || got != ":"+strconv.Itoa(i) {
			t.Fatalf("epoch %d: INCR = %q, %v", i, got, err)
		}
		last = filepath.Join(images, fmt.Sprintf("epoch-%d", i))
		s, err := c.Checkpoint(ctx, last)
		if err != nil {
			t.Fatalf("epoch %d: %v", i, err)
		}
		t.Logf("epoch %d: pause %v (freeze %v, dump %v, rootfs diff %v, thaw %v), %d bytes, %d pages copied, %d from the parent",
			i, s.Pause, s.Freeze, s.Dump, s.RootfsDiff, s.Thaw, s.ImageBytes, s.CRIUPages, s.ParentPages)
		if s.Pause <= 0 || s.ImageBytes == 0 || s.DiffBytes == 0 {
			t.Fatalf("epoch %d: implausible stats %+v", i, s)
		}
		if incremental != (i > 1 && s.ParentPages > 0) && i > 1 {
			t.Fatalf("epoch %d: incremental %v, but %d pages came from the parent", i, incremental, s.ParentPages)
		}
	}
	// The container kept running; a write after the last checkpoint must be
	// lost by the restore (on a connection of its own, so that the first
	// connection's TCP state matches the checkpoint).
	nc2, err := lab.DialInNetns(l.Netns("client"), ip+":6379")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := lab.NewRedisConn(nc2).Do("SET", "after-checkpoint", "x"); err != nil || got != "+OK" {
		t.Fatalf("SET after checkpoint = %q, %v", got, err)
	}
	nc2.Close()
	// CRIU ran in the container's UTS and IPC namespaces: the images do not
	// carry them, the restore makes them again.
	for _, pattern := range []string{"utsns-*.img", "ipcns-var-*.img"} {
		if m, _ := filepath.Glob(filepath.Join(last, pattern)); len(m) > 0 {
			t.Errorf("images hold %v: CRIU dumped the namespace", m)
		}
	}
	hostname := hostnameOf(ctx, t, st.InitPid)

	// The incremental run restores as the shim's backup does, with CRIU's
	// kernel-feature cache (on the image tmpfs, as the shim keeps it).
	var cache *KernelCache
	if incremental {
		cache = &KernelCache{Preload: cfg.Memory.Preload, File: filepath.Join(images, "criu.kdat")}
	}
	res, _ := crashAndRestoreWith(ctx, t, l, st, last, "ckpt1-restored", cache)
	t.Logf("restored pid %d in %v", res.Pid, res.Duration)
	for _, ns := range []string{"uts", "ipc"} {
		if sameNS("/proc/self/ns/"+ns, fmt.Sprintf("/proc/%d/ns/%s", res.Pid, ns)) == nil {
			t.Errorf("restored container shares our %s namespace", ns)
		}
	}
	if got := hostnameOf(ctx, t, res.Pid); got != hostname {
		t.Errorf("host name after restore %q, want %q", got, hostname)
	}

	if got, err := conn.Do("INCR", "counter"); err != nil || got != ":"+strconv.Itoa(epochs+1) {
		t.Fatalf("after restore, on the connection opened before the crash: INCR = %q, %v", got, err)
	}
	if got, err := conn.Do("GET", "after-checkpoint"); err != nil || got != "$-1" {
		t.Fatalf("after restore: GET after-checkpoint = %q, %v (want nil)", got, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/marker", res.Pid))
	if err != nil || strings.TrimSpace(string(b)) != "epoch-data" {
		t.Fatalf("writable layer after restore: /marker = %q, %v", b, err)
	}
}

// hostnameOf returns the host name in the UTS namespace of process pid.
func hostnameOf(ctx context.Context, t *testing.T, pid int) string {
	t.Helper()
	out, err := launch.Command(ctx, launch.OS{}, nil, "nsenter", "-t", strconv.Itoa(pid), "--uts", "cat", "/proc/sys/kernel/hostname")
	if err != nil {
		t.Fatalf("host name of %d: %v", pid, err)
	}
	return strings.TrimSpace(string(out))
}

// TestCheckpointSysVIPC: CRIU runs in the container's IPC namespace and does
// not dump it until a System V object appears there. The first checkpoint
// that finds one (while frozen) fails; from the next on CRIU dumps the
// namespace, and a restore brings the object back. A new Checkpointer
// dumps it from the start.
func TestCheckpointSysVIPC(t *testing.T) {
	l := testLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	const id = "sysv"
	ip := runRedis(ctx, t, l, id)
	cfg := CheckpointerConfig{
		RuncRoot: "/run/containerd/runc/" + l.Namespace("a"),
		ID:       id,
		CRIU:     CRIUCommand{Argv: []string{"nsenter", "--net=" + l.Netns("a"), "criu"}},
		Dump:     FastDumpOptions(),
	}
	c, err := NewCheckpointer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pid := strconv.Itoa(c.State().InitPid)
	images := imageTmpfs(t)
	hasIPCImage := func(dir string) bool {
		m, _ := filepath.Glob(filepath.Join(dir, "ipcns-var-*.img"))
		return len(m) > 0
	}
	if _, err := c.Checkpoint(ctx, filepath.Join(images, "1")); err != nil {
		t.Fatal(err)
	}
	if hasIPCImage(filepath.Join(images, "1")) {
		t.Fatal("no System V objects, yet CRIU dumped the IPC namespace")
	}
	out, err := launch.Command(ctx, launch.OS{}, nil, "nsenter", "-t", pid, "--ipc", "ipcmk", "-M", "8192")
	if err != nil {
		t.Fatal(err)
	}
	shmid := strings.TrimSpace(out[strings.LastIndex(out, ":")+1:])
	_, err = c.Checkpoint(ctx, filepath.Join(images, "2"))
	if err == nil || !strings.Contains(err.Error(), "gained System V objects (shm)") {
		t.Fatalf("checkpoint after a shm segment appeared: %v, want the System V error", err)
	}
	last := filepath.Join(images, "3")
	if _, err := c.Checkpoint(ctx, last); err != nil {
		t.Fatal(err)
	}
	if !hasIPCImage(last) {
		t.Fatal("CRIU did not dump the IPC namespace after the System V error")
	}
	waitRedis(ctx, t, l, ip) // still serving

	c2, err := NewCheckpointer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.cfg.CRIU.IPCNS != "" {
		t.Errorf("new Checkpointer runs CRIU in an IPC namespace with a shm segment")
	}

	res, _ := crashAndRestore(ctx, t, l, c.State(), last, "sysv-restored")
	out, err = launch.Command(ctx, launch.OS{}, nil, "nsenter", "-t", strconv.Itoa(res.Pid), "--ipc", "ipcs", "-m", "-i", shmid)
	if err != nil || !strings.Contains(out, "bytes=8192") {
		t.Fatalf("shm segment %s after restore: %q, %v", shmid, out, err)
	}
}
