// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iorrc/rrc/runtime/launch"
)

// The Redis client of the lab's tests: one TCP connection from a lab host,
// RESP by hand, and the workload whose replies a failover must not
// contradict.

// DialInNetns opens a TCP connection from inside the network namespace at
// nsPath: only socket() and connect() need the thread switched; the socket
// stays in that namespace. It gives up after 5 s.
func DialInNetns(nsPath, addr string) (net.Conn, error) {
	return DialInNetnsTimeout(nsPath, addr, 5*time.Second)
}

// DialInNetnsTimeout is DialInNetns giving up after timeout.
func DialInNetnsTimeout(nsPath, addr string, timeout time.Duration) (conn net.Conn, err error) {
	err = launch.InNetns(nsPath, func() error {
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return conn, err
}

// RedisConn speaks just enough RESP over one connection.
type RedisConn struct {
	c net.Conn
	r *bufio.Reader
}

// NewRedisConn wraps an open connection.
func NewRedisConn(c net.Conn) *RedisConn { return &RedisConn{c: c, r: bufio.NewReader(c)} }

// Close closes the connection.
func (r *RedisConn) Close() error { return r.c.Close() }

// Do sends one command and returns the reply line (the body of a bulk
// string), with a 15 s deadline.
func (r *RedisConn) Do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := r.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		body, err := r.r.ReadString('\n')
		return strings.TrimRight(body, "\r\n"), err
	}
	return line, nil
}

// RedisWorkload drives one connection with rounds of INCR counter and
// SET key:i value:i, and records every reply. While RunUntil runs, other
// goroutines read it through Err, RepliesAfter and FirstReplyAfter only;
// its fields once RunUntil has returned.
type RedisWorkload struct {
	Conn *RedisConn
	// Prefix is put before every key: workloads with prefixes of their own
	// can share a server (each has its own counter and keys).
	Prefix string
	// Fresh: the counter is new and this workload's alone (a fresh server,
	// or a Prefix no one else uses). Verify then wants the INCR replies to
	// be exactly 1, 2, 3, … and the counter to read back as the last one;
	// otherwise consecutive from the first (e.g. the demo's client, on a
	// counter an earlier client may have left).
	Fresh   bool
	N       int               // rounds done
	Incrs   []int64           // INCR replies, in order
	Keys    map[string]string // acknowledged SETs
	Replies []time.Time       // when each reply arrived
	Lat     []time.Duration   // each reply's latency
	Slowest time.Duration

	mu  sync.Mutex // Replies, Lat, Slowest and err, while RunUntil runs
	err error      // what ended RunUntil
}

// NewRedisWorkload starts a workload on c.
func NewRedisWorkload(c net.Conn) *RedisWorkload {
	return &RedisWorkload{Conn: NewRedisConn(c), Keys: map[string]string{}}
}

// Do sends one command and records the reply's time and latency.
func (w *RedisWorkload) Do(args ...string) (string, error) {
	start := time.Now()
	r, err := w.Conn.Do(args...)
	if err == nil {
		d := time.Since(start)
		w.mu.Lock()
		w.Replies = append(w.Replies, time.Now())
		w.Lat = append(w.Lat, d)
		w.Slowest = max(w.Slowest, d)
		w.mu.Unlock()
	}
	return r, err
}

// Run does rounds of INCR counter; SET key:i value:i.
func (w *RedisWorkload) Run(ctx context.Context, rounds int) error {
	for range rounds {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := w.round(); err != nil {
			return err
		}
	}
	return nil
}

// RunUntil does rounds until stop is closed or one fails (Err says how).
func (w *RedisWorkload) RunUntil(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if err := w.round(); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
	}
}

// Err is the error that ended RunUntil (nil: none yet).
func (w *RedisWorkload) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *RedisWorkload) round() error {
	w.N++
	r, err := w.Do("INCR", w.Prefix+"counter")
	if err != nil {
		return fmt.Errorf("INCR #%d: %w", w.N, err)
	}
	v, err := strconv.ParseInt(strings.TrimPrefix(r, ":"), 10, 64)
	if err != nil {
		return fmt.Errorf("INCR #%d reply %q", w.N, r)
	}
	w.Incrs = append(w.Incrs, v)
	k, val := fmt.Sprintf("%skey:%d", w.Prefix, w.N), fmt.Sprintf("value:%d", w.N)
	if r, err := w.Do("SET", k, val); err != nil || r != "+OK" {
		return fmt.Errorf("SET %s: %q, %v", k, r, err)
	}
	w.Keys[k] = val
	return nil
}

// Verify checks what a failover must keep: INCR replies went up by one each
// time (never back, no increment the client saw lost; from 1 and read back
// as the last if Fresh), and every acknowledged write reads back with its
// value.
func (w *RedisWorkload) Verify() error {
	if err := checkIncrs(w.Incrs, w.Fresh); err != nil {
		return err
	}
	if w.Fresh {
		want := strconv.Itoa(len(w.Incrs))
		if got, err := w.Conn.Do("GET", w.Prefix+"counter"); err != nil || got != want {
			return fmt.Errorf("GET %scounter = %q, %v; want %s (acknowledged increments lost)", w.Prefix, got, err, want)
		}
	}
	for k, v := range w.Keys {
		got, err := w.Conn.Do("GET", k)
		if err != nil {
			return fmt.Errorf("GET %s after failover: %w", k, err)
		}
		if got != v {
			return fmt.Errorf("GET %s after failover = %q, want %q (acknowledged write lost)", k, got, v)
		}
	}
	return nil
}

// checkIncrs: the replies are consecutive, from 1 if fresh.
func checkIncrs(incrs []int64, fresh bool) error {
	if len(incrs) == 0 {
		return nil
	}
	next := incrs[0]
	if fresh {
		next = 1
	}
	for i, v := range incrs {
		if v != next+int64(i) {
			return fmt.Errorf("INCR reply %d of %d is %d, want %d (replies %v): state went backwards or skipped",
				i+1, len(incrs), v, next+int64(i), incrs[max(0, i-3):min(len(incrs), i+3)])
		}
	}
	return nil
}

// RepliesAfter counts the replies that came after t.
func (w *RedisWorkload) RepliesAfter(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.Replies {
		if r.After(t) {
			n++
		}
	}
	return n
}

// FirstReplyAfter is how long after t the first reply came (0: none).
func (w *RedisWorkload) FirstReplyAfter(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.Replies {
		if r.After(t) {
			return r.Sub(t)
		}
	}
	return 0
}

// Latency returns the mean and p99 of the replies so far.
func (w *RedisWorkload) Latency() (mean, p99 time.Duration) {
	if len(w.Lat) == 0 {
		return 0, 0
	}
	s := slices.Clone(w.Lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s)), s[min(len(s)-1, len(s)*99/100)]
}
