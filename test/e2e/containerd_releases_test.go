// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/prereq"
)

// containerdReleases are the containerd 2.x releases the shim is tested under besides
// the one pinned in go.mod (/usr/local/bin/containerd, every other test's): the oldest
// and the newest, which contrib/setup/frontends/50-containerd-releases.sh builds into
// /opt/rrc/containerd-<release>/bin; more with RRC_CONTAINERD_RELEASES (the same list
// setup reads, e.g. "v2.0.14 v2.1.9 v2.2.10 v2.4.2").
func containerdReleases() []string {
	list := os.Getenv("RRC_CONTAINERD_RELEASES")
	if list == "" {
		list = "v2.0.14 v2.4.2"
	}
	var out []string
	for _, v := range strings.Fields(list) {
		minor := strings.TrimPrefix(v, "v")
		if i := strings.LastIndexByte(minor, '.'); i > 0 {
			minor = minor[:i]
		}
		out = append(out, minor)
	}
	return out
}

// TestContainerdReleases replicates Redis from lab host a to host b through ctr under
// each release's containerd (LAB_CONTAINERD), keeps a client connection busy, crashes a
// and checks that the client carries on with b's restored container; first, a container
// started with runtime options. Before 2.3, the
// daemons ask for the shim's start in the old way and need the answer in JSON
// (package shim/legacystart); 2.4 asks in protobuf.
func TestContainerdReleases(t *testing.T) {
	for _, release := range containerdReleases() {
		t.Run(release, func(t *testing.T) { testContainerdRelease(t, release) })
	}
}

func testContainerdRelease(t *testing.T, release string) {
	bin := "/opt/rrc/containerd-" + release + "/bin/containerd"
	prereq.Path(t, bin, "containerd "+release+": make setup")
	t.Setenv("LAB_CONTAINERD", bin)
	rl := startReplicationLab(t, "rrcver", "10.104.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}

	// The hosts run that release; ctr is the pinned release's.
	for _, h := range []host{a, b} {
		if v := serverVersion(h.must(ctx, "version")); !strings.HasPrefix(v, release+".") {
			t.Fatalf("containerd of %s is %q, want %s.x", h.name, v, release)
		}
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		t.Logf("%s", out)
	}

	// Runtime options (what CRI and Docker send; ctr's --runtime-config-path): a daemon
	// before 2.3 passes them to the start action on stdin, where they must not be taken
	// for a 2.3 daemon's bootstrap parameters (their type URL as the instance id).
	opts := filepath.Join(t.TempDir(), "runc.toml")
	writeFile(t, opts, "BinaryName = \"/usr/sbin/runc\"\n")
	a.must(ctx, "run", "-d", "--runtime", rrc, "--runtime-config-path", opts, busybox, "relopts", "sleep", "1000")
	if findShim(l.Namespace("a"), "relopts") == 0 {
		t.Errorf("no shim runs with -id relopts for the container started with runtime options")
	}
	if code := a.killAndDelete(ctx, "relopts", "KILL"); code != 128+9 {
		t.Errorf("exit status of relopts killed with KILL: %d, want %d", code, 128+9)
	}

	const id = "rel"
	svc := l.ServiceIP(0)
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: svc, listen: l.IP("b") + ":7100"})
	cl := redisClient(ctx, t, l, svc+":6379", 25)
	after := failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)

	// That containerd sees the restored process as the task, and deletes it.
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	if out := b.must(ctx, "task", "ls"); !taskLine(out, id, rc.Pid, "RUNNING") {
		t.Errorf("ctr task ls on b does not show the restored pid %d RUNNING:\n%s", rc.Pid, out)
	}
	if code := b.killAndDelete(ctx, id, "KILL"); code != 128+9 {
		t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
	}
	nothingLeft(t, l, "b", id)
}

// serverVersion is the daemon's version in the output of `ctr version`.
func serverVersion(out string) string {
	_, server, _ := strings.Cut(out, "Server:")
	for _, line := range strings.Split(server, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
