// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReply(t *testing.T) {
	at := time.Unix(1700000000, 123)
	c := &conn{now: func() time.Time { return at }}
	cases := []struct{ in, want string }{
		{"INCR", "COUNT 1"},
		{"incr", "COUNT 2"},
		{"ECHO hello world", "ECHO hello world"},
		{"ECHO", "ECHO "},
		{"INCR\r", "COUNT 3"},
		{"TIME", "TIME 1700000000000000123"},
		{"RAND 0", "ERR RAND wants a byte count from 1 to 1024"},
		{"RAND 1025", "ERR RAND wants a byte count from 1 to 1024"},
		{"RAND x", "ERR RAND wants a byte count from 1 to 1024"},
		{"NOPE", `ERR unknown command "NOPE"`},
	}
	for _, k := range cases {
		if got, quit := c.reply(k.in); got != k.want || quit {
			t.Errorf("%q: %q (quit %v), want %q", k.in, got, quit, k.want)
		}
	}
	if got, quit := c.reply("QUIT"); got != "BYE" || !quit {
		t.Errorf("QUIT: %q, %v", got, quit)
	}
}

// TestServe runs the server on a loopback connection: counters are per
// connection, pipelined requests are answered in order, RAND is random.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	read := func(r *bufio.Reader) string {
		t.Helper()
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return strings.TrimSuffix(l, "\n")
	}
	c1, r1 := dial()
	defer c1.Close()
	c2, r2 := dial()
	defer c2.Close()
	// Pipelined: five requests in one write.
	if _, err := c1.Write([]byte("INCR\nINCR\nECHO a b\nRAND 16\nRAND 16\n")); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"COUNT 1", "COUNT 2", "ECHO a b"} {
		if got := read(r1); got != want {
			t.Errorf("reply %d: %q, want %q", i, got, want)
		}
	}
	x, y := read(r1), read(r1)
	for _, r := range []string{x, y} {
		h, ok := strings.CutPrefix(r, "RAND ")
		if b, err := hex.DecodeString(h); !ok || err != nil || len(b) != 16 {
			t.Errorf("RAND 16: %q", r)
		}
	}
	if x == y {
		t.Errorf("two RAND 16 replies are equal: %q", x)
	}
	// The second connection has a counter of its own.
	before := time.Now().UnixNano()
	c2.Write([]byte("INCR\nTIME\n"))
	if got := read(r2); got != "COUNT 1" {
		t.Errorf("second connection's first INCR: %q", got)
	}
	tm := read(r2)
	ns, err := strconv.ParseInt(strings.TrimPrefix(tm, "TIME "), 10, 64)
	if err != nil || ns < before || ns > time.Now().UnixNano() {
		t.Errorf("TIME: %q, want a time between the request and the reply", tm)
	}
	c1.Write([]byte("INCR\nQUIT\n"))
	if got := read(r1); got != "COUNT 3" {
		t.Errorf("third INCR: %q", got)
	}
	if got := read(r1); got != "BYE" {
		t.Errorf("QUIT: %q", got)
	}
	if l, err := r1.ReadString('\n'); err == nil {
		t.Errorf("after QUIT: %q, want the connection closed", l)
	}
	// A line longer than the limit ends the connection with an error.
	c3, r3 := dial()
	defer c3.Close()
	c3.Write([]byte(strings.Repeat("x", maxLine+10) + "\n"))
	if got := read(r3); got != "ERR line too long" {
		t.Errorf("long line: %q", got)
	}
}
