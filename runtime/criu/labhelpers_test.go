// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/lab"

	"github.com/iorrc/rrc/test/prereq"
)

// Lab names for this package's tests (see docs/LAB.md); override with
// LAB/LAB_SUBNET.
func testLab(t *testing.T) *lab.Lab {
	t.Helper()
	prereq.Root(t, "cgroups, CRIU, mounts")
	prereq.Commands(t, "criu", "runc", "nsenter", "redis-cli")
	name, subnet := os.Getenv("LAB"), os.Getenv("LAB_SUBNET")
	if name == "" {
		name, subnet = "rrcrt", "10.84.0"
	}
	return lab.Start(t, name, subnet)
}

// runRedis runs Redis as container id on lab host a (--net-host) and waits
// until it answers from the client host; it returns its address.
func runRedis(ctx context.Context, t *testing.T, l *lab.Lab, id string) string {
	t.Helper()
	ip := l.IP("a")
	if _, err := l.Ctr(ctx, "a", "run", "-d", "--net-host", lab.RedisImage, id); err != nil {
		t.Fatalf("run redis: %v", err)
	}
	waitRedis(ctx, t, l, ip)
	return ip
}

// waitRedis waits until Redis answers PING from the client host.
func waitRedis(ctx context.Context, t *testing.T, l *lab.Lab, ip string) {
	t.Helper()
	err := lab.WaitFor(10*time.Second, func() error {
		out, err := l.Exec(ctx, "client", "redis-cli", "-h", ip, "ping")
		if err == nil && !strings.Contains(out, "PONG") {
			err = fmt.Errorf("ping: %q", out)
		}
		return err
	})
	if err != nil {
		t.Fatalf("redis on %s: %v", ip, err)
	}
}

// imageTmpfs mounts a tmpfs for checkpoint images, unmounted at cleanup.
func imageTmpfs(t *testing.T) string {
	t.Helper()
	return imageTmpfsSize(t, 2<<30)
}

// imageTmpfsSize is imageTmpfs with a size limit of size bytes (a large
// Redis needs more than the default 2 GiB).
func imageTmpfsSize(t *testing.T, size int64) string {
	t.Helper()
	return imageTmpfsPages(t, size, true)
}

// imageTmpfsPages is imageTmpfsSize with or without large folios.
func imageTmpfsPages(t *testing.T, size int64, largeFolios bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	unmount, err := mountImageTmpfs(dir, size, largeFolios)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// restoreBundle writes a bundle for the restored container: the original
// config.json with its own cgroup path, and a fresh overlay rootfs over the
// original lower layers with the checkpoint's writable layer.
func restoreBundle(t *testing.T, config []byte, layers OverlayMount, images, cgroupsPath string) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteRestoreSpec(filepath.Join(dir, "config.json"), config, cgroupsPath); err != nil {
		t.Fatal(err)
	}
	unmount, err := PrepareRestoreRootfs(filepath.Join(dir, "rootfs"), layers.Lower,
		filepath.Join(dir, "upper"), filepath.Join(dir, "work"), images)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// crashAndRestore crashes and restarts lab host a, then restores the
// checkpoint in images as container rid with runc, in a's network namespace,
// from a bundle made of st's (the checkpointed container's) spec and layers,
// read before the crash. It returns the restore and how long making the
// bundle took.
func crashAndRestore(ctx context.Context, t *testing.T, l *lab.Lab, st *RuncState, images, rid string) (RestoreResult, time.Duration) {
	return crashAndRestoreWith(ctx, t, l, st, images, rid, nil)
}

// crashAndRestoreWith is crashAndRestore with CRIU's kernel-feature cache
// written in a's namespace after the restart and used by the restore, whose
// log must say so.
func crashAndRestoreWith(ctx context.Context, t *testing.T, l *lab.Lab, st *RuncState, images, rid string, cache *KernelCache) (RestoreResult, time.Duration) {
	t.Helper()
	layers, err := ReadOverlayMount(st.Config.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(st.Bundle(), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Crash(ctx, "a"); err != nil {
		t.Fatalf("crash a: %v", err)
	}
	if err := l.Restart(ctx, "a"); err != nil {
		t.Fatalf("restart a: %v", err)
	}
	prep := time.Now()
	bundle := restoreBundle(t, config, layers, images, "/"+l.Namespace("a")+"/"+rid)
	prepDur := time.Since(prep)
	runcRoot := filepath.Join(t.TempDir(), "runc")
	runcCleanup(t, l.Netns("a"), runcRoot, rid)
	var env []string
	if cache != nil {
		if err := cache.Warm(ctx, CRIUCommand{NetNS: l.Netns("a")}); err != nil {
			t.Fatal(err)
		}
		env = cache.Env()
	}
	work := t.TempDir()
	res, err := Restore(ctx, RestoreConfig{
		RuncArgv: []string{"nsenter", "--net=" + l.Netns("a"), "runc"},
		RuncRoot: runcRoot, ID: rid, Bundle: bundle, ImagesDir: images, WorkDir: work, Env: env,
	})
	if err != nil {
		t.Fatal(err)
	}
	if log, _ := os.ReadFile(filepath.Join(work, "restore.log")); (cache != nil) != strings.Contains(string(log), "Loaded kdat cache") {
		t.Errorf("restore with the kernel-feature cache %v, but CRIU's log says:\n%s", cache != nil, launch.Tail(string(log), 3000))
	}
	return res, prepDur
}

// runcCleanup kills and deletes a container started by runc directly, and
// unmounts runc's criu-root bind mount, left if runc restore was killed.
func runcCleanup(t *testing.T, netns, root, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// Left only by a killed runc restore: usually not mounted.
		_ = unix.Unmount(filepath.Join(root, id, "criu-root"), unix.MNT_DETACH)
		argv := []string{"--net=" + netns, "runc", "--root", root}
		// The container may be gone already; the delete below reports
		// what is left.
		_, _ = launch.Command(ctx, launch.OS{}, nil, "nsenter", append(argv, "kill", id, "KILL")...)
		time.Sleep(100 * time.Millisecond)
		if out, err := launch.Command(ctx, launch.OS{}, nil, "nsenter", append(argv, "delete", "-f", id)...); err != nil && !strings.Contains(out, "not exist") {
			t.Logf("runc delete %s: %v", id, err)
		}
	})
}

// loadRedis writes keys records of 100 bytes with redis-cli --pipe from the
// lab client.
func loadRedis(ctx context.Context, t *testing.T, l *lab.Lab, ip string, keys int) {
	t.Helper()
	var in bytes.Buffer
	val := bytes.Repeat([]byte("v"), 100)
	for i := 0; i < keys; i++ {
		k := "key:" + strconv.Itoa(i)
		fmt.Fprintf(&in, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n", len(k), k, val)
	}
	cmd := l.Command(ctx, "client", "redis-cli", "-h", ip, "--pipe")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("load redis: %v: %s", err, out)
	}
	out, err := l.Exec(ctx, "client", "redis-cli", "-h", ip, "dbsize")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dbsize %s", bytes.TrimSpace([]byte(out)))
}
