// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command redislat is make bench's single-client latency probe of a Redis:
// one connection, one request at a time, GET of the records DEBUG POPULATE
// loaded (key:0 …) and SET of 100-byte values, alternating; every reply
// checked. It prints one JSON object with the latency percentiles (to
// p99.9, which redis-benchmark does not give) and the longest wait for a
// reply (across a failover). Run it inside the lab client's network
// namespace (lab.sh exec client redislat ...).
//
//	redislat -addr 10.87.0.200:6379 -n 20000
//	redislat -addr 10.87.0.200:6379 -seconds 8
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

type result struct {
	Requests     int     `json:"requests"`
	Seconds      float64 `json:"seconds"`
	MeanMS       float64 `json:"mean_ms"`
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	P999MS       float64 `json:"p999_ms"`
	LongestGapMS float64 `json:"longest_gap_ms"`
	GapEnd       int64   `json:"gap_end_unix_ms,omitempty"`
	Error        string  `json:"error,omitempty"`
}

func main() {
	addr := flag.String("addr", "", "Redis host:port")
	n := flag.Int("n", 0, "requests (or -seconds)")
	secs := flag.Float64("seconds", 0, "how long to send requests (or -n)")
	keys := flag.Int("keys", 100000, "records loaded by DEBUG POPULATE (key:0 …)")
	flag.Parse()
	if *addr == "" || (*n <= 0) == (*secs <= 0) {
		fmt.Fprintln(os.Stderr, "redislat: -addr and one of -n, -seconds are required")
		os.Exit(2)
	}
	r, lat := run(*addr, *n, time.Duration(*secs*float64(time.Second)), *keys)
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
		fmt.Fprintln(os.Stderr, "redislat:", err)
		os.Exit(1)
	}
	if r.Error != "" {
		os.Exit(1)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func run(addr string, n int, d time.Duration, keys int) (result, []time.Duration) {
	var r result
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		r.Error = err.Error()
		return r, nil
	}
	rc := lab.NewRedisConn(c)
	defer rc.Close()
	value := strings.Repeat("v", 100)
	lat := make([]time.Duration, 0, max(n, 1024))
	start := time.Now()
	last := start
	for i := 0; (n > 0 && i < n) || (n == 0 && time.Since(start) < d); i++ {
		var args []string
		if i%2 == 0 {
			args = []string{"GET", fmt.Sprintf("key:%d", rand.IntN(keys))}
		} else {
			args = []string{"SET", fmt.Sprintf("bench:%d", i), value}
		}
		t := time.Now()
		reply, err := rc.Do(args...)
		now := time.Now()
		if err == nil && i%2 == 1 && reply != "+OK" {
			err = fmt.Errorf("SET reply %q", reply)
		}
		if err == nil && i%2 == 0 && !strings.HasPrefix(reply, "value:") && !strings.HasPrefix(reply, "$") {
			err = fmt.Errorf("GET %s reply %q", args[1], reply)
		}
		if err != nil {
			r.Error = fmt.Sprintf("request %d (%s): %v", i, args[0], err)
			break
		}
		lat = append(lat, now.Sub(t))
		if g := ms(now.Sub(last)); g > r.LongestGapMS {
			r.LongestGapMS, r.GapEnd = g, now.UnixMilli()
		}
		last = now
	}
	r.Requests, r.Seconds = len(lat), time.Since(start).Seconds()
	return r, lat
}
