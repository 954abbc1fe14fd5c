// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The web workload of the lab's tests: rrc.local/lighttpd serves WWWFiles,
// whose bytes the clients know (contrib/imagebuild/images.sh makes the same),
// so every byte of every response is checked.

// WWWBig is the name of the 10 MiB file of rrc.local/lighttpd.
const WWWBig = "big"

// WWWFiles are the small files of rrc.local/lighttpd: f01..f20, from 1 KiB
// to 27 KiB (1024 + 1368 (i-1) bytes).
func WWWFiles() []string {
	var names []string
	for i := 1; i <= 20; i++ {
		names = append(names, fmt.Sprintf("f%02d", i))
	}
	return names
}

// WWWSize is the size of a file of rrc.local/lighttpd.
func WWWSize(name string) int {
	if name == WWWBig {
		return 10 << 20
	}
	i, _ := strconv.Atoi(strings.TrimPrefix(name, "f"))
	return 1024 + (i-1)*1368
}

// WWWContent is the content of a file of rrc.local/lighttpd: a line naming
// it, repeated and cut at its size.
func WWWContent(name string) []byte {
	line := []byte("rrc-www " + name + " 0123456789abcdefghijklmnopqrstuvwxyz\n")
	n := WWWSize(name)
	return bytes.Repeat(line, n/len(line)+1)[:n]
}

// HTTPConn is one keep-alive HTTP/1.1 connection.
type HTTPConn struct {
	c net.Conn
	r *bufio.Reader
}

// NewHTTPConn wraps a connection to the web server.
func NewHTTPConn(c net.Conn) *HTTPConn { return &HTTPConn{c: c, r: bufio.NewReaderSize(c, 64<<10)} }

// Close closes the connection.
func (h *HTTPConn) Close() error { return h.c.Close() }

// Get fetches /name on the connection and checks every byte of the body
// against WWWContent. A connection the server closes is an error.
func (h *HTTPConn) Get(name string, timeout time.Duration) error {
	h.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(h.c, "GET /%s HTTP/1.1\r\nHost: rrc\r\n\r\n", name); err != nil {
		return fmt.Errorf("GET /%s: send: %w", name, err)
	}
	status, err := h.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("GET /%s: status line: %w", name, err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return fmt.Errorf("GET /%s: %q", name, strings.TrimSpace(status))
	}
	length := -1
	for {
		line, err := h.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("GET /%s: headers: %w", name, err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		switch strings.ToLower(k) {
		case "content-length":
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		case "connection":
			if strings.EqualFold(strings.TrimSpace(v), "close") {
				return fmt.Errorf("GET /%s: the server closes the connection", name)
			}
		}
	}
	want := WWWContent(name)
	if length != len(want) {
		return fmt.Errorf("GET /%s: Content-Length %d, want %d", name, length, len(want))
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(h.r, body); err != nil {
		return fmt.Errorf("GET /%s: body: %w", name, err)
	}
	if i := firstDiff(body, want); i >= 0 {
		return fmt.Errorf("GET /%s: byte %d is %q, want %q", name, i, body[i], want[i])
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// WebWorkload is N keep-alive connections, each fetching f01..f20 in turn
// in a loop, one request at a time.
type WebWorkload struct {
	conns []*HTTPConn

	mu      sync.Mutex
	done    [][]time.Time // per connection: when each response was complete
	lat     []time.Duration
	started []time.Time
	err     error
}

// NewWebWorkload dials n connections to addr (host:80) from the network
// namespace at nsPath.
func NewWebWorkload(nsPath, addr string, n int) (*WebWorkload, error) {
	w := &WebWorkload{done: make([][]time.Time, n), started: make([]time.Time, n)}
	for range n {
		c, err := DialInNetnsTimeout(nsPath, addr, 20*time.Second)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("web workload: dial %s: %w", addr, err)
		}
		w.conns = append(w.conns, NewHTTPConn(c))
	}
	return w, nil
}

// Close closes every connection.
func (w *WebWorkload) Close() {
	for _, c := range w.conns {
		c.Close()
	}
}

// Run fetches until ctx ends or a response fails (timeout: the longest a
// single response may take). It returns the first error.
func (w *WebWorkload) Run(ctx context.Context, timeout time.Duration) error {
	var wg sync.WaitGroup
	files := WWWFiles()
	for i, c := range w.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; ctx.Err() == nil; k++ {
				t0 := time.Now()
				if err := c.Get(files[k%len(files)], timeout); err != nil {
					if ctx.Err() != nil {
						return // the deadline cut a request short: not the server's fault
					}
					w.fail(fmt.Errorf("connection %d: %w", i, err))
					return
				}
				t1 := time.Now()
				w.mu.Lock()
				if len(w.done[i]) == 0 {
					w.started[i] = t0
				}
				w.done[i] = append(w.done[i], t1)
				w.lat = append(w.lat, t1.Sub(t0))
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *WebWorkload) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		for _, c := range w.conns {
			c.c.SetDeadline(time.Now()) // stop the others
		}
	}
}

// Responses is the number of complete, checked responses.
func (w *WebWorkload) Responses() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lat)
}

// Latency is the mean and p99 of the response times.
func (w *WebWorkload) Latency() (mean, p99 time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return latencySummary(w.lat)
}

func latencySummary(lat []time.Duration) (mean, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s)), s[min(len(s)-1, len(s)*99/100)]
}

// Gap is the longest wait of a connection around t: from its last response
// completed before t to its first one after.
type Gap struct {
	Conn        int
	Before      time.Time // last response before t
	After       time.Time // first response after t (zero: none)
	Wait        time.Duration
	AfterEvent  time.Duration // After - t
	Connections int
}

// LongestWait returns, for each connection, its longest wait between two
// consecutive responses that ended after t (the one spanning an event at t,
// when responses kept coming up to it), and the longest of them. A
// connection with no response after t counts as waiting until now.
func (w *WebWorkload) LongestWait(t time.Time) (Gap, []Gap) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var all []Gap
	var worst Gap
	for i, ds := range w.done {
		g := Gap{Conn: i}
		prev := w.started[i]
		for _, d := range ds {
			if d.After(t) && d.Sub(prev) > g.Wait {
				g.Before, g.After, g.Wait = prev, d, d.Sub(prev)
			}
			prev = d
		}
		if len(ds) == 0 || !ds[len(ds)-1].After(t) {
			g = Gap{Conn: i, Before: prev, Wait: time.Since(prev)} // still waiting
		}
		g.AfterEvent = g.After.Sub(t)
		all = append(all, g)
		if g.Wait > worst.Wait {
			worst = g
		}
	}
	worst.Connections = len(all)
	return worst, all
}

// Download fetches name on a fresh connection from the network namespace
// at nsPath, checking every byte; it returns how long the transfer took
// from the request to the last byte, and when each MiB arrived.
func Download(nsPath, addr, name string, timeout time.Duration) (time.Duration, []time.Time, error) {
	c, err := DialInNetnsTimeout(nsPath, addr, 20*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("download: dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	t0 := time.Now()
	if _, err := fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: rrc\r\n\r\n", name); err != nil {
		return 0, nil, fmt.Errorf("download %s: %w", name, err)
	}
	r := bufio.NewReaderSize(c, 256<<10)
	var hdr []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, nil, fmt.Errorf("download %s: headers: %w", name, err)
		}
		if line = strings.TrimSpace(line); line == "" {
			break
		}
		hdr = append(hdr, line)
	}
	if len(hdr) == 0 || !strings.HasPrefix(hdr[0], "HTTP/1.1 200") {
		return 0, nil, fmt.Errorf("download %s: %q", name, hdr)
	}
	want := WWWContent(name)
	got := 0
	buf := make([]byte, 256<<10)
	var marks []time.Time
	for got < len(want) {
		n, err := r.Read(buf[:min(len(buf), len(want)-got)])
		if i := firstDiff(buf[:n], want[got:got+n]); i >= 0 {
			return 0, nil, fmt.Errorf("download %s: byte %d is %q, want %q", name, got+i, buf[i], want[got+i])
		}
		for m := len(marks); (m+1)<<20 <= got+n; m++ {
			marks = append(marks, time.Now())
		}
		got += n
		if err != nil && got < len(want) {
			if errors.Is(err, io.EOF) {
				return 0, nil, fmt.Errorf("download %s: connection closed after %d of %d bytes", name, got, len(want))
			}
			return 0, nil, fmt.Errorf("download %s: after %d of %d bytes: %w", name, got, len(want), err)
		}
	}
	return time.Since(t0), marks, nil
}

// LongestGap is the longest time any connection went without a response
// during the run: between two consecutive responses of one connection (or
// from its first request to its first response).
func (w *WebWorkload) LongestGap() Gap {
	w.mu.Lock()
	defer w.mu.Unlock()
	var worst Gap
	for i, ds := range w.done {
		prev := w.started[i]
		for _, d := range ds {
			if d.Sub(prev) > worst.Wait {
				worst = Gap{Conn: i, Before: prev, After: d, Wait: d.Sub(prev)}
			}
			prev = d
		}
	}
	worst.Connections = len(w.done)
	return worst
}
