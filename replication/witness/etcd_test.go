// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package witness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/iorrc/rrc/replication/peertls/pki"
	"github.com/iorrc/rrc/test/prereq"
)

// etcdBin is where contrib/setup/etcd.sh unpacks etcd.
const etcdBin = "/opt/rrc/etcd/bin/etcd"

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a one-member etcd on loopback for the test (raft timing
// as in the lab, so that leases of 1 s are granted as asked); with tls,
// its clients must present a certificate of the CA, and it returns
// the client's TLS files.
func startEtcd(t *testing.T, tls bool) (string, TLSFiles) {
	t.Helper()
	prereq.Path(t, etcdBin, "etcd (contrib/setup/etcd.sh)")
	scheme, files := "http", TLSFiles{}
	var tlsArgs []string
	if tls {
		certs, err := pki.Generate(t.TempDir(), "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		h := certs.Hosts["127.0.0.1"]
		scheme, files = "https", TLSFiles{CA: certs.CAFile, Cert: h.CertFile, Key: h.KeyFile}
		tlsArgs = []string{"--cert-file", h.CertFile, "--key-file", h.KeyFile, "--trusted-ca-file", certs.CAFile, "--client-cert-auth"}
	}
	client := fmt.Sprintf("%s://127.0.0.1:%d", scheme, freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(etcdBin, append([]string{"--name", "t", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "t=" + peer,
		"--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr"}, tlsArgs...)...)
	log, err := os.Create(t.TempDir() + "/etcd.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	tlsCfg, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: time.Second, TLS: tlsCfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return client, files
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("etcd does not answer: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dialTest(t *testing.T, endpoint, holder string) *Etcd {
	t.Helper()
	return dialTLS(t, endpoint, holder, TLSFiles{})
}

func dialTLS(t *testing.T, endpoint, holder string, files TLSFiles) *Etcd {
	t.Helper()
	tlsCfg, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Dial(Config{Endpoints: []string{endpoint}, TLS: tlsCfg, TTL: time.Second, Pair: "p1", Holder: holder, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// TestEtcdOwnership: with a real etcd, one owner at a time; the other
// side waits until the owner's lease expires, and then sees its degraded
// mark; the old owner learns it lost the pair; a fresh primary clears the
// mark.
func TestEtcdOwnership(t *testing.T) {
	ep, _ := startEtcd(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := dialTest(t, ep, "a primary"), dialTest(t, ep, "b backup")
	if _, err := a.Acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(a.HeldUntil()); d <= 0 || d > time.Second {
		t.Fatalf("held for %s after acquiring with a 1 s lease", d)
	}
	var owned *OwnedError
	if _, err := b.Acquire(ctx, false); !errors.As(err, &owned) || owned.Owner != "a primary" {
		t.Fatalf("second owner: %v", err)
	}
	if err := a.MarkDegraded(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := b.MarkDegraded(ctx, true); err == nil {
		t.Fatal("a side that does not own the pair wrote the mark")
	}
	// a's host stops: no more renewals, nothing revoked.
	a.mu.Lock()
	stop := a.stopRenew
	a.stopRenew = nil
	a.mu.Unlock()
	stop()
	<-a.renewDone
	start := time.Now()
	stale, err := b.Acquire(ctx, true)
	took := time.Since(start)
	if err != nil || !stale {
		t.Fatalf("backup's acquire: stale %v, %v", stale, err)
	}
	// Its last renewal came at most a third of the TTL before it stopped.
	if took < time.Second*2/3 {
		t.Fatalf("owner after %s: before the old lease could expire", took)
	}
	t.Logf("the backup owned the pair %s after the primary's renewals stopped", took.Round(time.Millisecond))
	a.startRenewing() // a comes back: its lease is gone and b owns the pair
	select {
	case <-a.Lost():
	case <-time.After(3 * time.Second):
		t.Fatalf("the old owner did not learn it lost the pair: %+v", a.Status())
	}
	if !a.HeldUntil().IsZero() || a.Status().Lease != "" {
		t.Fatalf("lost owner still holds: %+v", a.Status())
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c := dialTest(t, ep, "a primary")
	if _, err := c.Acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	d := dialTest(t, ep, "b backup")
	if stale, err := d.Acquire(ctx, true); err != nil || stale {
		t.Fatalf("after a fresh primary: stale %v, %v", stale, err)
	}
}

// TestEtcdTLS: an etcd that asks for client certificates: a side with
// the CA and its certificate owns the pair; one without a certificate
// cannot.
func TestEtcdTLS(t *testing.T) {
	ep, files := startEtcd(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := dialTLS(t, ep, "a primary", files)
	if _, err := a.Acquire(ctx, false); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if a.Status().Lease == "" {
		t.Fatalf("no lease: %+v", a.Status())
	}
	b := dialTLS(t, ep, "b backup", TLSFiles{CA: files.CA})
	if _, err := b.Acquire(ctx, false); err == nil {
		t.Fatal("owned the pair without a client certificate")
	}
}

// TestConfigValidate: the settings a witness refuses.
func TestConfigValidate(t *testing.T) {
	ok := Config{Endpoints: []string{"http://x:2379"}, Pair: "p", Holder: "a primary"}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"defaults", func(*Config) {}, false},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, true},
		{"ttl not whole seconds", func(c *Config) { c.TTL = 1500 * time.Millisecond }, true},
		{"ttl too short", func(c *Config) { c.TTL = 500 * time.Millisecond }, true},
		{"margin too large", func(c *Config) { c.TTL, c.Margin = 3*time.Second, 2*time.Second }, true},
		{"pair with a slash", func(c *Config) { c.Pair = "a/b" }, true},
		{"no holder", func(c *Config) { c.Holder = "" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.WithDefaults().Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("Validate: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
