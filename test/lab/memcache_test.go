// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/prereq"
)

// TestMemcacheConn runs the client against a real memcached on loopback.
func TestMemcacheConn(t *testing.T) {
	prereq.Commands(t, "memcached")
	bin, _ := prereq.LookPath("memcached")
	// A free port: memcached has no "any port" of its own.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	ln.Close()
	cmd := exec.Command(bin, "-u", "root", "-l", "127.0.0.1", "-p", port, "-U", "0", "-t", "2", "-m", "16")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start memcached: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var c net.Conn
	if err := WaitFor(5*time.Second, func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		t.Fatalf("memcached on %s: %v", addr, err)
	}
	m := NewMemcacheConn(c)
	defer m.Close()

	if _, err := m.Get("absent"); !errors.Is(err, ErrMemcacheNotFound) {
		t.Errorf("get absent: %v, want not found", err)
	}
	if _, err := m.Incr("absent", 1); !errors.Is(err, ErrMemcacheNotFound) {
		t.Errorf("incr absent: %v, want not found", err)
	}
	if err := m.Set("k", "hello world"); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get("k"); err != nil || v != "hello world" {
		t.Errorf("get k: %q, %v", v, err)
	}
	if err := m.Set("empty", ""); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get("empty"); err != nil || v != "" {
		t.Errorf("get empty: %q, %v", v, err)
	}
	if err := m.Set("n", "0"); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		if v, err := m.Incr("n", 1); err != nil || v != i {
			t.Fatalf("incr n #%d: %d, %v", i, v, err)
		}
	}
	if v, err := m.Incr("n", 10); err != nil || v != 15 {
		t.Errorf("incr n 10: %d, %v", v, err)
	}
	if _, err := m.Incr("k", 1); err == nil || errors.Is(err, ErrMemcacheNotFound) {
		t.Errorf("incr of a non-number: %v, want memcached's error as a bad reply", err)
	}
	// A second connection sees what the first stored.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m2 := NewMemcacheConn(c2)
	defer m2.Close()
	if v, err := m2.Get("n"); err != nil || v != fmt.Sprint(15) {
		t.Errorf("get n on another connection: %q, %v", v, err)
	}
}
