// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command client is the demo's Redis client: one TCP connection from a lab
// host's network namespace to the replicated Redis, a round of
// INCR counter + SET key:i value:i every ~50 ms, one line per second, and at
// the end a check that the failover lost nothing the client was told.
//
//	client -netns /run/netns/rrcdemo-client -addr 10.76.0.200:6379 [-duration 20s]
//
// It stops on SIGINT/SIGTERM or after -duration, then verifies
// (lab.RedisWorkload.Verify: INCR replies consecutive, every acknowledged
// SET reads back) and prints a summary. Exit status 0 only if every round
// got its replies on the one connection and the verification passed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

const clock = "15:04:05.000"

func main() {
	netns := flag.String("netns", "", "network namespace to connect from (path, e.g. /run/netns/rrcdemo-client); empty: this one")
	addr := flag.String("addr", "", "Redis address, host:port")
	every := flag.Duration("every", 50*time.Millisecond, "time between rounds (INCR + SET)")
	duration := flag.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	samples := flag.String("samples", "", "at the end, write each reply's arrival and latency to this CSV file (unix_ms,latency_ms), for test/plot")
	flag.Parse()
	if *addr == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(*netns, *addr, *every, *duration, *samples))
}

func run(netns, addr string, every, duration time.Duration, samples string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}

	conn, err := connect(netns, addr)
	if err != nil {
		fmt.Printf("client: connect to %s: %v\n", addr, err)
		return 1
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	w := lab.NewRedisWorkload(conn)
	idStart, err := w.Conn.Do("CLIENT", "ID")
	if err != nil {
		fmt.Printf("client: CLIENT ID: %v\n", err)
		return 1
	}
	start := time.Now()
	fmt.Printf("client: connected %s -> %s (Redis client id %s) at %s\n", local, addr, trimInt(idStart), start.Format(clock))

	var (
		runErr          error
		lastReply       = start
		secGap, maxGap  time.Duration
		maxGapAt        time.Time
		secStart        = start
		secReplies, sec int
	)
	tick := time.NewTicker(every)
	defer tick.Stop()
	line := func(now time.Time) {
		sec++
		last := int64(0)
		if n := len(w.Incrs); n > 0 {
			last = w.Incrs[n-1]
		}
		fmt.Printf("client: %s  %3ds  replies %5d (+%3d)  INCR %5d  max gap %4d ms  from %s\n",
			now.Format(clock), sec, len(w.Replies), len(w.Replies)-secReplies, last, secGap.Milliseconds(), conn.LocalAddr())
		secReplies, secGap, secStart = len(w.Replies), 0, now
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		n := len(w.Replies)
		if err := w.Run(ctx, 1); err != nil {
			if ctx.Err() == nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				runErr = err
			}
			break loop
		}
		for _, r := range w.Replies[n:] {
			if g := r.Sub(lastReply); g > secGap {
				secGap = g
				if g > maxGap {
					maxGap, maxGapAt = g, lastReply
				}
			}
			lastReply = r
		}
		if now := time.Now(); now.Sub(secStart) >= time.Second {
			line(now)
		}
	}
	elapsed := time.Since(start)

	fmt.Println("client: stopped; summary")
	fmt.Printf("  ran %s, %d rounds, %d replies\n", elapsed.Round(100*time.Millisecond), w.N, len(w.Replies))
	if len(w.Incrs) > 0 {
		fmt.Printf("  INCR counter went %d -> %d\n", w.Incrs[0], w.Incrs[len(w.Incrs)-1])
	}
	if maxGap > 0 {
		fmt.Printf("  longest wait between two replies: %d ms, from %s to %s\n",
			maxGap.Milliseconds(), maxGapAt.Format(clock), maxGapAt.Add(maxGap).Format(clock))
	}
	mean, p99 := w.Latency()
	fmt.Printf("  reply latency mean %.1f ms, p99 %.1f ms\n", ms(mean), ms(p99))
	if samples != "" {
		if err := writeSamples(samples, w.Replies, w.Lat); err != nil {
			fmt.Printf("  samples: %v\n", err)
		}
	}
	ok := runErr == nil
	if runErr != nil {
		fmt.Printf("  FAILED: the connection broke: %v\n", runErr)
	}
	if ok {
		idEnd, err := w.Conn.Do("CLIENT", "ID")
		same := err == nil && idEnd == idStart && conn.LocalAddr().String() == local
		if same {
			fmt.Printf("  one connection throughout: %s, Redis client id %s at the start and the end\n", local, trimInt(idEnd))
		} else {
			fmt.Printf("  FAILED: not the same connection: %s id %s at the start, %s id %s (%v) at the end\n",
				local, trimInt(idStart), conn.LocalAddr(), trimInt(idEnd), err)
			ok = false
		}
	}
	if ok {
		if err := w.Verify(); err != nil {
			fmt.Printf("  FAILED verification: %v\n", err)
			ok = false
		} else {
			fmt.Printf("  verified: %d INCR replies consecutive, all %d acknowledged SETs read back\n", len(w.Incrs), len(w.Keys))
		}
	}
	if !ok {
		return 1
	}
	return 0
}

func connect(netns, addr string) (net.Conn, error) {
	if netns == "" {
		return net.DialTimeout("tcp", addr, 5*time.Second)
	}
	return lab.DialInNetns(netns, addr)
}

func trimInt(s string) string {
	if len(s) > 0 && s[0] == ':' {
		return s[1:]
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// writeSamples writes each reply's arrival (unix ms) and latency (ms).
func writeSamples(path string, at []time.Time, lat []time.Duration) error {
	var b strings.Builder
	b.WriteString("unix_ms,latency_ms\n")
	for i := range min(len(at), len(lat)) {
		fmt.Fprintf(&b, "%d,%.3f\n", at[i].UnixMilli(), ms(lat[i]))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
