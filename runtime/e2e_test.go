package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
	layers, err := ReadOverlayMount(st.Config.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(st.Bundle(), "config.json"))
	if err != nil {
		t.Fatal(err)
	}

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

	if err := l.Crash(ctx, "a"); err != nil {
		t.Fatalf("crash a: %v", err)
	}
	if err := l.Restart(ctx, "a"); err != nil {
		t.Fatalf("restart a: %v", err)
	}

	const rid = "ckpt1-restored"
	runcRoot := filepath.Join(t.TempDir(), "runc")
	bundle := restoreBundle(t, config, layers, last, "/"+l.Namespace("a")+"/"+rid)
	runcCleanup(t, l.Netns("a"), runcRoot, rid)
	res, err := Restore(ctx, RestoreConfig{
		RuncArgv:  []string{"nsenter", "--net=" + l.Netns("a"), "runc"},
		RuncRoot:  runcRoot,
		ID:        rid,
		Bundle:    bundle,
		ImagesDir: last,
		WorkDir:   t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored pid %d in %v", res.Pid, res.Duration)

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
