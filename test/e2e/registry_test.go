// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// TestRegistryPull: images pulled from the lab's registry (LAB_REGISTRY=1:
// distribution's registry on the client host, HTTPS with a certificate of a
// lab CA that each host's hosts.toml names), with `ctr image pull
// --hosts-dir` as a user types it; without it the pull must fail on the
// unknown authority. Each host first drops the Redis image the lab
// imported, content and all, so that its pull fetches every blob. A pair
// whose backup pulled another tag of the name, another digest, is refused
// with both digests named; a pair of the pulled image fails over with
// lab.sh crash a while a client stays connected.
func TestRegistryPull(t *testing.T) {
	prereq.Path(t, "/opt/rrc/registry/bin/registry", "the lab's registry (contrib/setup/registry.sh)")
	prereq.Commands(t, "curl")
	l0 := lab.New("rrcreg", "10.108.0")
	l0.Registry = true
	rl := startReplicationLabWith(t, l0)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := host{t: t, lab: l, name: "a"}, host{t: t, lab: l, name: "b"}
	ref := l.RegistryRef(redis)

	imported := a.imageDigest(ctx, redis)
	for _, h := range []host{a, b} {
		h.must(ctx, "images", "rm", "--sync", redis)
		if _, errOut, code := h.ctr(ctx, "", "content", "get", imported); code == 0 {
			t.Fatalf("%s still holds the manifest %s after images rm --sync", h.name, imported)
		} else {
			t.Logf("%s: manifest %s gone: %s", h.name, imported, strings.TrimSpace(errOut))
		}
	}
	// The registry speaks TLS only with the lab CA's certificate: trust
	// comes from the hosts dir, not the machine's roots.
	if out, errOut, code := b.ctr(ctx, "", "image", "pull", ref); code == 0 || !strings.Contains(errOut, "certificate signed by unknown authority") {
		t.Errorf("ctr image pull %s without the hosts dir: exit %d, want an unknown authority: %s%s", ref, code, out, errOut)
	}
	pulledA, pulledB := a.pull(ctx, ref), b.pull(ctx, ref)
	if pulledA != imported || pulledB != imported {
		t.Fatalf("%s pulled as %s on a, %s on b; the lab pushed %s", ref, pulledA, pulledB, imported)
	}

	t.Run("another digest of the name refused", func(t *testing.T) {
		// A new build pushed under another tag of the name (threadkv also
		// speaks Redis' protocol on 6379), which only b pulls.
		next := l.RegistryAddr() + "/redis:next"
		b.must(ctx, "images", "push", "--hosts-dir", l.HostsDir("b"), next, threadkv)
		other := b.pull(ctx, next)
		if other == pulledA {
			t.Fatalf("%s and %s have the same digest %s", next, ref, other)
		}
		p := pairSpec{id: "regnext", image: next, serviceIP: l.ServiceIP(1), listen: l.IP("b") + ":7101"}
		st := rl.imageRefused(ctx, t, p, ref)
		for _, d := range []string{pulledA, other} {
			if !strings.Contains(st.Engine.Reason, d) {
				t.Errorf("the refusal does not name digest %s: %s", d, st.Engine.Reason)
			}
		}
	})

	t.Run("failover", func(t *testing.T) {
		p := pairSpec{id: "regredis", image: ref, serviceIP: l.ServiceIP(0), listen: l.IP("b") + ":7100"}
		rl.startPair(ctx, t, p)
		cl := redisClient(ctx, t, l, p.serviceIP+":6379", 25)
		after := failOverLogged(ctx, t, l, l.Namespace("b"), p.id, cl)
		if rc := after.Engine.Restored; rc == nil || rc.Pid <= 0 {
			t.Fatalf("no restored container in b's status: %+v", after.Engine)
		}
		var info struct{ Image string }
		if err := json.Unmarshal([]byte(b.must(ctx, "containers", "info", p.id)), &info); err != nil || info.Image != ref {
			t.Errorf("b's container %s: image %q (%v), want %s", p.id, info.Image, err, ref)
		}
		if code := b.killAndDelete(ctx, p.id, "KILL"); code != 128+9 {
			t.Errorf("exit status of the restored task killed with KILL: %d, want %d", code, 128+9)
		}
		nothingLeft(t, l, "b", p.id)
	})
}

// pull pulls ref on h from the lab's registry as a user would (ctr image
// pull with the host's hosts dir, which names the lab CA) and returns the
// digest h then holds it under.
func (h host) pull(ctx context.Context, ref string) string {
	h.t.Helper()
	start := time.Now()
	h.must(ctx, "image", "pull", "--hosts-dir", h.lab.HostsDir(h.name), ref)
	d := h.imageDigest(ctx, ref)
	h.t.Logf("%s pulled %s: %s (%s)", h.name, ref, d, time.Since(start).Round(time.Millisecond))
	return d
}

// imageDigest is the digest of the image h holds as ref (ctr images ls).
func (h host) imageDigest(ctx context.Context, ref string) string {
	h.t.Helper()
	for _, line := range strings.Split(h.must(ctx, "images", "ls", "name=="+ref), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	h.t.Fatalf("%s holds no image %s", h.name, ref)
	return ""
}
