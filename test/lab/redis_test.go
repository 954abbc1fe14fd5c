// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCheckIncrs(t *testing.T) {
	cases := []struct {
		name   string
		incrs  []int64
		fresh  bool
		wantOK bool
	}{
		{"none", nil, true, true},
		{"fresh from 1", []int64{1, 2, 3, 4}, true, true},
		{"fresh, first lost", []int64{2, 3, 4}, true, false},
		{"earlier client's counter", []int64{41, 42, 43}, false, true},
		{"one reply", []int64{7}, false, true},
		{"skipped", []int64{1, 2, 4, 5}, false, false},
		{"twice", []int64{1, 2, 2, 3}, true, false},
		{"backwards", []int64{5, 6, 7, 3, 4}, false, false},
		{"backwards to 1", []int64{1, 2, 3, 1, 2}, true, false},
	}
	for _, c := range cases {
		err := checkIncrs(c.incrs, c.fresh)
		if (err == nil) != c.wantOK {
			t.Errorf("%s: %v (fresh %v): %v", c.name, c.incrs, c.fresh, err)
		}
	}
}

// fakeRedis answers INCR, SET and GET over the server end of a pipe.
type fakeRedis struct {
	mu sync.Mutex
	kv map[string]string
}

func (f *fakeRedis) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		var args []string
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		for range n {
			r.ReadString('\n') // $len
			a, _ := r.ReadString('\n')
			args = append(args, strings.TrimRight(a, "\r\n"))
		}
		f.mu.Lock()
		var reply string
		switch args[0] {
		case "INCR":
			v, _ := strconv.Atoi(f.kv[args[1]])
			f.kv[args[1]] = strconv.Itoa(v + 1)
			reply = fmt.Sprintf(":%d\r\n", v+1)
		case "SET":
			f.kv[args[1]], reply = args[2], "+OK\r\n"
		case "GET":
			v, ok := f.kv[args[1]]
			reply = fmt.Sprintf("$%d\r\n%s\r\n", len(v), v)
			if !ok {
				reply = "$-1\r\n"
			}
		}
		f.mu.Unlock()
		c.Write([]byte(reply))
	}
}

// Two workloads with prefixes of their own share a server, run until
// stopped, and verify; a lost increment or write is then caught.
func TestRedisWorkloadRunUntil(t *testing.T) {
	srv := &fakeRedis{kv: map[string]string{}}
	var ws []*RedisWorkload
	for _, p := range []string{"c1:", "c2:"} {
		cc, sc := net.Pipe()
		t.Cleanup(func() { cc.Close(); sc.Close() })
		go srv.serve(sc)
		w := NewRedisWorkload(cc)
		w.Prefix, w.Fresh = p, true
		ws = append(ws, w)
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.RunUntil(stop) })
	}
	if err := WaitFor(5*time.Second, func() error {
		for _, w := range ws {
			if n := w.RepliesAfter(start); n < 20 || w.Err() != nil {
				return fmt.Errorf("%s: %d replies, %v", w.Prefix, n, w.Err())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for _, w := range ws {
		if err := w.Verify(); err != nil || w.Err() != nil {
			t.Fatalf("%s: %v, %v", w.Prefix, err, w.Err())
		}
		if w.FirstReplyAfter(start) <= 0 || len(w.Keys) != len(w.Incrs) {
			t.Errorf("%s: first reply %s, %d keys, %d INCRs", w.Prefix, w.FirstReplyAfter(start), len(w.Keys), len(w.Incrs))
		}
	}

	w := ws[0]
	srv.mu.Lock()
	srv.kv[w.Prefix+"counter"] = strconv.Itoa(len(w.Incrs) - 1)
	srv.mu.Unlock()
	if err := w.Verify(); err == nil || !strings.Contains(err.Error(), "increments lost") {
		t.Errorf("counter behind its last INCR reply: %v", err)
	}
	w.Fresh = false // an earlier client's counter: not read back
	if err := w.Verify(); err != nil {
		t.Errorf("not fresh: %v", err)
	}
	srv.mu.Lock()
	delete(srv.kv, w.Prefix+"key:3")
	srv.mu.Unlock()
	if err := w.Verify(); err == nil || !strings.Contains(err.Error(), "acknowledged write lost") {
		t.Errorf("a SET lost: %v", err)
	}
}
