// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The memcached client of the lab's tests: the text protocol's set, get and
// incr by hand over one connection, strict about every byte of a reply, so
// that a test can tell a reply a failover contradicted from a reset.

// ErrMemcacheNotFound is incr's or get's answer for a key that is not there.
var ErrMemcacheNotFound = errors.New("memcached: not found")

// MemcacheConn is one connection to memcached.
type MemcacheConn struct {
	c       net.Conn
	r       *bufio.Reader
	Timeout time.Duration // per request; 15 s when zero
}

// NewMemcacheConn wraps an open connection.
func NewMemcacheConn(c net.Conn) *MemcacheConn {
	return &MemcacheConn{c: c, r: bufio.NewReader(c)}
}

// Close closes the connection.
func (m *MemcacheConn) Close() error { return m.c.Close() }

func (m *MemcacheConn) send(req string) error {
	d := m.Timeout
	if d == 0 {
		d = 15 * time.Second
	}
	if err := m.c.SetDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	_, err := io.WriteString(m.c, req)
	return err
}

// line reads one reply line without its CRLF; a line without CR is a
// protocol error (memcached always sends CRLF).
func (m *MemcacheConn) line() (string, error) {
	l, err := m.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	s, ok := strings.CutSuffix(l, "\r\n")
	if !ok {
		return "", fmt.Errorf("memcached: reply line %q does not end in CRLF", l)
	}
	return s, nil
}

// Set stores value at key (flags 0, no expiry) and wants STORED.
func (m *MemcacheConn) Set(key, value string) error {
	if err := m.send(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value)); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	l, err := m.line()
	if err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	if l != "STORED" {
		return fmt.Errorf("set %s: reply %q, want STORED", key, l)
	}
	return nil
}

// Get returns the value at key, or ErrMemcacheNotFound.
func (m *MemcacheConn) Get(key string) (string, error) {
	if err := m.send("get " + key + "\r\n"); err != nil {
		return "", fmt.Errorf("get %s: %w", key, err)
	}
	l, err := m.line()
	if err != nil {
		return "", fmt.Errorf("get %s: %w", key, err)
	}
	if l == "END" {
		return "", ErrMemcacheNotFound
	}
	// VALUE <key> <flags> <bytes>
	f := strings.Split(l, " ")
	if len(f) != 4 || f[0] != "VALUE" || f[1] != key || f[2] != "0" {
		return "", fmt.Errorf("get %s: reply %q, want VALUE %s 0 <bytes>", key, l, key)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil || n < 0 || n > 1<<20 {
		return "", fmt.Errorf("get %s: reply %q: bad length", key, l)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(m.r, body); err != nil {
		return "", fmt.Errorf("get %s: value: %w", key, err)
	}
	if string(body[n:]) != "\r\n" {
		return "", fmt.Errorf("get %s: value of %d bytes not followed by CRLF: %q", key, n, body)
	}
	end, err := m.line()
	if err != nil {
		return "", fmt.Errorf("get %s: %w", key, err)
	}
	if end != "END" {
		return "", fmt.Errorf("get %s: %q after the value, want END", key, end)
	}
	return string(body[:n]), nil
}

// Incr adds delta to the decimal number at key and returns the new value,
// or ErrMemcacheNotFound (incr does not create a key).
func (m *MemcacheConn) Incr(key string, delta uint64) (uint64, error) {
	if err := m.send(fmt.Sprintf("incr %s %d\r\n", key, delta)); err != nil {
		return 0, fmt.Errorf("incr %s: %w", key, err)
	}
	l, err := m.line()
	if err != nil {
		return 0, fmt.Errorf("incr %s: %w", key, err)
	}
	if l == "NOT_FOUND" {
		return 0, ErrMemcacheNotFound
	}
	v, err := strconv.ParseUint(l, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("incr %s: reply %q, want a number", key, l)
	}
	return v, nil
}
