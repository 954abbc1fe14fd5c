// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command kvclient is make bench's client of a key-value server, Redis or
// memcached: conns connections, each one request at a time, GET of a
// record the load put there (key:0 …) and SET of a 100-byte value,
// alternating, every reply checked. It prints one JSON object: requests
// per second, the latency percentiles (to p99.9, which redis-benchmark does
// not give) and the longest any connection waited for a reply (across a
// failover). With -load it first writes the records itself (memcached has
// no DEBUG POPULATE). Run it inside the lab client's network namespace
// (lab.sh exec client kvclient ...).
//
//	kvclient -addr 10.87.0.200:6379 -seconds 10
//	kvclient -proto memcache -addr 10.87.0.200:11211 -load 100000 -conns 50 -n 200000
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

type result struct {
	Requests     int     `json:"requests"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps"`
	MeanMS       float64 `json:"mean_ms"`
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	P999MS       float64 `json:"p999_ms"`
	LongestGapMS float64 `json:"longest_gap_ms"`
	GapEnd       int64   `json:"gap_end_unix_ms,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// kv is one connection's requests.
type kv interface {
	get(key string) error
	set(key, value string) error
	Close() error
}

type redisKV struct{ *lab.RedisConn }

func (r redisKV) get(key string) error {
	reply, err := r.Do("GET", key)
	if err == nil && !strings.HasPrefix(reply, "v") { // DEBUG POPULATE's value:N…, or -load's
		err = fmt.Errorf("GET %s: reply %q", key, reply)
	}
	return err
}

func (r redisKV) set(key, value string) error {
	reply, err := r.Do("SET", key, value)
	if err == nil && reply != "+OK" {
		err = fmt.Errorf("SET %s: reply %q", key, reply)
	}
	return err
}

type memcacheKV struct{ *lab.MemcacheConn }

// get takes a miss as an answer: memcached evicts records when the
// clients' SETs fill its memory.
func (m memcacheKV) get(key string) error {
	v, err := m.Get(key)
	if errors.Is(err, lab.ErrMemcacheNotFound) {
		return nil
	}
	if err == nil && !strings.HasPrefix(v, "v") {
		err = fmt.Errorf("get %s: value %q", key, v)
	}
	return err
}

func (m memcacheKV) set(key, value string) error { return m.Set(key, value) }

func main() {
	addr := flag.String("addr", "", "server host:port")
	proto := flag.String("proto", "redis", "redis or memcache")
	conns := flag.Int("conns", 1, "connections, one request at a time each")
	n := flag.Int("n", 0, "requests in all (or -seconds)")
	secs := flag.Float64("seconds", 0, "how long to send requests (or -n)")
	keys := flag.Int("keys", 100000, "records there are (key:0 …)")
	load := flag.Bool("load", false, "write the records first (100 bytes each)")
	samplesFile := flag.String("samples", "", "also write each reply's arrival and latency to this CSV file (unix_ms,latency_ms), for test/plot")
	flag.Parse()
	if *addr == "" || (*n <= 0) == (*secs <= 0) || *conns < 1 || (*proto != "redis" && *proto != "memcache") {
		fmt.Fprintln(os.Stderr, "kvclient: -addr, -proto redis|memcache, -conns >= 1 and one of -n, -seconds are required")
		os.Exit(2)
	}
	dial := func() (kv, error) {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		if *proto == "memcache" {
			return memcacheKV{lab.NewMemcacheConn(c)}, nil
		}
		return redisKV{lab.NewRedisConn(c)}, nil
	}
	var r result
	if *load {
		if err := loadRecords(*addr, *proto, dial, *keys); err != nil {
			r.Error = "load: " + err.Error()
			finish(r, nil, "")
		}
	}
	r, samples := run(dial, *conns, *n, time.Duration(*secs*float64(time.Second)), *keys)
	finish(r, samples, *samplesFile)
}

// sample is one reply: when it came, and how long after its request.
type sample struct {
	at  time.Time
	lat time.Duration
}

// value is a record's 100 bytes.
var value = "v" + strings.Repeat("x", 99)

// loadRecords writes key:0 … key:n-1. Memcached's are pipelined (noreply,
// then one get to wait for them): one at a time, a replicated server in
// epoch mode would take an epoch per record. Redis's go over 8
// connections (the bench loads Redis with DEBUG POPULATE instead).
func loadRecords(addr, proto string, dial func() (kv, error), n int) error {
	if proto == "memcache" {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		w := bufio.NewWriterSize(c, 1<<16)
		for i := range n {
			fmt.Fprintf(w, "set key:%d 0 0 %d noreply\r\n%s\r\n", i, len(value), value)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		mc := lab.NewMemcacheConn(c)
		mc.Timeout = 5 * time.Minute // the server is still taking the records in
		return memcacheKV{mc}.get(fmt.Sprintf("key:%d", n-1))
	}
	const conns = 8
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			k, err := dial()
			if err != nil {
				errs[c] = err
				return
			}
			defer k.Close()
			for i := c; i < n && err == nil; i += conns {
				err = k.set(fmt.Sprintf("key:%d", i), value)
			}
			errs[c] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// run sends the requests and sums up.
func run(dial func() (kv, error), conns, n int, d time.Duration, keys int) (result, []sample) {
	var (
		mu   sync.Mutex
		r    result
		lat  []sample
		sent int
	)
	start := time.Now()
	more := func() bool { // claims the next request
		mu.Lock()
		defer mu.Unlock()
		if r.Error != "" || (n > 0 && sent >= n) || (n == 0 && time.Since(start) >= d) {
			return false
		}
		sent++
		return true
	}
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			k, err := dial()
			if err != nil {
				mu.Lock()
				r.Error = cmp.Or(r.Error, err.Error())
				mu.Unlock()
				return
			}
			defer k.Close()
			var mine []sample
			last := time.Now()
			gap, gapEnd := 0.0, int64(0)
			for i := 0; more(); i++ {
				t := time.Now()
				if i%2 == 0 {
					err = k.get(fmt.Sprintf("key:%d", rand.IntN(keys)))
				} else {
					err = k.set(fmt.Sprintf("bench:%d:%d", c, i), value)
				}
				now := time.Now()
				if err != nil {
					mu.Lock()
					r.Error = cmp.Or(r.Error, fmt.Sprintf("connection %d, request %d: %v", c, i, err))
					mu.Unlock()
					break
				}
				mine = append(mine, sample{now, now.Sub(t)})
				if g := ms(now.Sub(last)); g > gap {
					gap, gapEnd = g, now.UnixMilli()
				}
				last = now
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if gap > r.LongestGapMS {
				r.LongestGapMS, r.GapEnd = gap, gapEnd
			}
		})
	}
	wg.Wait()
	r.Requests, r.Seconds = len(lat), time.Since(start).Seconds()
	r.RPS = float64(r.Requests) / r.Seconds
	return r, lat
}

// finish prints r with the percentiles of the samples, writes them to
// samplesFile if set, and exits.
func finish(r result, samples []sample, samplesFile string) {
	if samplesFile != "" {
		var b strings.Builder
		b.WriteString("unix_ms,latency_ms\n")
		for _, s := range samples {
			fmt.Fprintf(&b, "%d,%.3f\n", s.at.UnixMilli(), ms(s.lat))
		}
		if err := os.WriteFile(samplesFile, []byte(b.String()), 0o644); err != nil {
			r.Error = cmp.Or(r.Error, "samples: "+err.Error())
		}
	}
	lat := make([]time.Duration, len(samples))
	for i, s := range samples {
		lat[i] = s.lat
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		q := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
		r.MeanMS, r.P50MS, r.P99MS, r.P999MS = ms(sum)/float64(len(lat)), q(0.5), q(0.99), q(0.999)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "kvclient:", err)
		os.Exit(1)
	}
	if r.Error != "" {
		os.Exit(1)
	}
	os.Exit(0)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
