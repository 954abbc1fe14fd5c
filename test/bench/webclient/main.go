// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command webclient is make bench's client of the lab's web server
// (rrc.local/lighttpd): keep-alive connections fetching its small files in
// a loop, or one download of its 10 MB file, every byte checked. It prints
// one JSON object. Run it inside the lab client's network namespace
// (lab.sh exec client webclient ...).
//
//	webclient -addr 10.87.0.200:80 -conns 8 -seconds 10
//	webclient -addr 10.87.0.200:80 -download
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

type result struct {
	Responses    int     `json:"responses,omitempty"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps,omitempty"`
	MeanMS       float64 `json:"mean_ms,omitempty"`
	P99MS        float64 `json:"p99_ms,omitempty"`
	LongestGapMS float64 `json:"longest_gap_ms,omitempty"`
	// GapEnd is when the longest gap ended (Unix ms), to place it
	// against a failover's timings.
	GapEnd int64  `json:"gap_end_unix_ms,omitempty"`
	Error  string `json:"error,omitempty"`
}

func main() {
	addr := flag.String("addr", "", "web server host:port")
	conns := flag.Int("conns", 8, "keep-alive connections")
	secs := flag.Float64("seconds", 10, "how long to fetch")
	download := flag.Bool("download", false, "download the 10 MB file once instead")
	flag.Parse()
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "webclient: -addr is required")
		os.Exit(2)
	}
	var r result
	if *download {
		took, _, err := lab.Download("/proc/self/ns/net", *addr, lab.WWWBig, 120*time.Second)
		r.Seconds = took.Seconds()
		if err != nil {
			r.Error = err.Error()
		}
	} else {
		w, err := lab.NewWebWorkload("/proc/self/ns/net", *addr, *conns)
		if err != nil {
			r.Error = err.Error()
		} else {
			d := time.Duration(*secs * float64(time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), d)
			t0 := time.Now()
			err := w.Run(ctx, 30*time.Second)
			cancel()
			r.Seconds = time.Since(t0).Seconds()
			if err != nil {
				r.Error = err.Error()
			}
			r.Responses = w.Responses()
			r.RPS = float64(r.Responses) / r.Seconds
			mean, p99 := w.Latency()
			r.MeanMS, r.P99MS = ms(mean), ms(p99)
			g := w.LongestGap()
			r.LongestGapMS, r.GapEnd = ms(g.Wait), g.After.UnixMilli()
			w.Close()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "webclient: writing the result:", err)
		os.Exit(1)
	}
	if r.Error != "" {
		os.Exit(1)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
