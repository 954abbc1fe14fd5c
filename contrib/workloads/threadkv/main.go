// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command threadkv is a small multi-threaded key-value server speaking the
// part of the Redis protocol (RESP) the lab's client uses (test/lab/redis.go):
// PING, INCR, SET, GET, DEL. It is the workload of the replication tests that
// needs a process with several OS threads in various states when CRIU
// checkpoints it: a goroutine per connection, GOMAXPROCS of at least 4, a
// sharded map with a mutex per shard, and background workers, each locked to
// an OS thread of its own, that keep walking the map.
//
//	threadkv [-addr :6379] [-workers 3]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"hash/fnv"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const shards = 16

type shard struct {
	mu sync.Mutex
	m  map[string]string
}

// Store is a map split into shards, each with its own mutex.
type Store struct {
	shards [shards]shard
	ops    atomic.Int64
}

func NewStore() *Store {
	s := &Store{}
	for i := range s.shards {
		s.shards[i].m = map[string]string{}
	}
	return s
}

func (s *Store) shard(key string) *shard {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &s.shards[h.Sum32()%shards]
}

func (s *Store) Get(key string) (string, bool) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	v, ok := sh.m[key]
	return v, ok
}

func (s *Store) Set(key, val string) {
	sh := s.shard(key)
	sh.mu.Lock()
	sh.m[key] = val
	sh.mu.Unlock()
}

func (s *Store) Del(key string) bool {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[key]
	delete(sh.m, key)
	return ok
}

var errNotInteger = errors.New("ERR value is not an integer or out of range")

// Incr adds one to the integer at key (0 if absent) under the shard lock.
func (s *Store) Incr(key string) (int64, error) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var n int64
	if v, ok := sh.m[key]; ok {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, errNotInteger
		}
	}
	if n == 1<<63-1 {
		return 0, errNotInteger
	}
	n++
	sh.m[key] = strconv.FormatInt(n, 10)
	return n, nil
}

// Len counts the keys, shard by shard.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Exec runs one command and appends its reply to dst.
func (s *Store) Exec(dst []byte, args []string) []byte {
	s.ops.Add(1)
	cmd := upper(args[0])
	arity := map[string]int{"PING": -1, "INCR": 2, "SET": 3, "GET": 2, "DEL": 2}
	want, known := arity[cmd]
	switch {
	case !known:
		return appendError(dst, "ERR unknown command '"+args[0]+"'")
	case want > 0 && len(args) != want, want < 0 && len(args) > 2:
		return appendError(dst, "ERR wrong number of arguments for '"+args[0]+"' command")
	}
	switch cmd {
	case "PING":
		if len(args) == 2 {
			return appendBulk(dst, args[1], true)
		}
		return appendSimple(dst, "PONG")
	case "INCR":
		n, err := s.Incr(args[1])
		if err != nil {
			return appendError(dst, err.Error())
		}
		return appendInt(dst, n)
	case "SET":
		s.Set(args[1], args[2])
		return appendSimple(dst, "OK")
	case "GET":
		v, ok := s.Get(args[1])
		return appendBulk(dst, v, ok)
	default: // DEL
		if s.Del(args[1]) {
			return appendInt(dst, 1)
		}
		return appendInt(dst, 0)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// serve handles one connection: requests are answered in order.
func (s *Store) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	var out []byte
	for {
		args, err := ReadCommand(r)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				// Best effort: the connection is closed next either way.
				_, _ = c.Write(appendError(nil, "ERR "+err.Error()))
			}
			return
		}
		out = s.Exec(out[:0], args)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// stats is what the background workers maintain.
type stats struct {
	ticks atomic.Int64
	keys  atomic.Int64
	sum   atomic.Uint64
}

// worker keeps one OS thread of its own busy: it is locked to it, sleeps
// in short periods (a thread in nanosleep/futex at checkpoint time) and
// walks a shard in between (a thread holding or waiting for a shard lock).
func worker(s *Store, st *stats, i int, period time.Duration) {
	runtime.LockOSThread() // never unlocked: the thread stays this worker's
	t := time.NewTicker(period)
	defer t.Stop()
	for n := i; ; n++ {
		<-t.C
		sh := &s.shards[n%shards]
		h := fnv.New64a()
		sh.mu.Lock()
		for k, v := range sh.m {
			h.Write([]byte(k))
			h.Write([]byte(v))
		}
		sh.mu.Unlock()
		st.sum.Add(h.Sum64())
		st.ticks.Add(1)
	}
}

func main() {
	addr := flag.String("addr", ":6379", "listen address")
	workers := flag.Int("workers", 3, "background workers, each on an OS thread of its own")
	flag.Parse()
	procs := max(4, runtime.NumCPU())
	runtime.GOMAXPROCS(procs)
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	s := NewStore()
	st := &stats{}
	for i := range *workers {
		go worker(s, st, i, time.Duration(5+i)*time.Millisecond)
	}
	go func() { // the stats ticker
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for range t.C {
			st.keys.Store(int64(s.Len()))
		}
	}()

	// Since Go 1.24 a listener is MPTCP where the kernel allows it; CRIU
	// cannot dump MPTCP sockets. io.rrc.v1 turns MPTCP off in a replicated
	// container's network namespace, so this listener falls back to TCP
	// there: left at Go's default on purpose (the e2e test shows it).
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("threadkv listening on %s (GOMAXPROCS %d, %d workers)", ln.Addr(), procs, *workers)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		log.Printf("exiting: %d ops, %d keys, %d worker ticks", s.ops.Load(), st.keys.Load(), st.ticks.Load())
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.serve(c)
	}
}
