// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build measure

package fastdump

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/test/prereq"
)

// TestMeasureCapture times the parts of a fast checkpoint against CRIU's
// dump of the same program, alternating: a workload of ten threads with
// RRC_MEASURE_CONNS (default 50) idle TCP connections, RRC_MEASURE_N
// (default 20) rounds. Run by hand or by make bench:
//
//	go test -tags measure ./runtime/fastdump -run TestMeasureCapture -v -count=1
func TestMeasureCapture(t *testing.T) {
	prereq.Root(t, "ptrace, TCP repair, cgroups and CRIU")
	prereq.Commands(t, "criu")
	conns, rounds := envInt("RRC_MEASURE_CONNS", 50), envInt("RRC_MEASURE_N", 20)
	cg := freezerCgroup(t)
	cmd, out := startWorkload(t, cg, "-listen", "127.0.0.1:0", "-write", "0")
	dialWorkload(t, out, conns)
	time.Sleep(200 * time.Millisecond)
	pid := cmd.Process.Pid
	socks := tcpSockets(t, pid) // kept from one round to the next, as the fast path will
	runtime.LockOSThread()
	times := map[string][]time.Duration{}
	lap := func(k string, since time.Time) time.Time {
		now := time.Now()
		times[k] = append(times[k], now.Sub(since))
		return now
	}
	size := XStateSize()
	for r := 0; r < rounds; r++ {
		// Fast: ptrace stop, no freezer.
		t0 := time.Now()
		s, err := Seize(cgroupTasks(t, cg))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		t1 := lap("stop all threads", t0)
		for _, tid := range s.Threads() {
			if _, err := CaptureThread(tid, size); err != nil {
				t.Fatal(err)
			}
		}
		t1 = lap("registers of all threads", t1)
		for _, fd := range socks {
			if _, err := CaptureTCP(fd); err != nil {
				t.Fatal(err)
			}
		}
		t1 = lap("all TCP connections", t1)
		if err := s.Detach(); err != nil {
			t.Fatal(err)
		}
		lap("detach", t1)
		lap("fast total", t0)
		time.Sleep(100 * time.Millisecond)

		// CRIU: a full dump with --leave-running, its frozen time.
		dir := filepath.Join(t.TempDir(), strconv.Itoa(r))
		criuDump(t, pid, dir, "--tcp-established", "--network-lock", "skip", "-v1")
		if st, err := readFrozen(dir); err == nil {
			times["CRIU frozen (full dump)"] = append(times["CRIU frozen (full dump)"], st)
		}
		os.RemoveAll(dir)
		time.Sleep(100 * time.Millisecond)
	}
	var keys []string
	for k := range times {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("%d threads, %d TCP connections, %d rounds", len(cgroupTasks(t, cg)), len(socks), rounds)
	for _, k := range keys {
		d := times[k]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		t.Logf("%-26s mean %7.3f ms  p50 %7.3f  p90 %7.3f  max %7.3f", k, ms(sum/time.Duration(len(d))), ms(d[len(d)/2]), ms(d[len(d)*9/10]), ms(d[len(d)-1]))
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// tcpSockets returns duplicates of pid's established TCP sockets.
func tcpSockets(t *testing.T, pid int) []int {
	t.Helper()
	ds, err := OpenDescriptors(pid)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, d := range ds {
		if info, err := unix.GetsockoptTCPInfo(d.Dup, unix.SOL_TCP, unix.TCP_INFO); err == nil && info.State == tcpEstablished {
			fds = append(fds, d.Dup)
			t.Cleanup(func() { unix.Close(d.Dup) })
			continue
		}
		unix.Close(d.Dup)
	}
	return fds
}

// readFrozen is CRIU's frozen time from its stats-dump.
func readFrozen(dir string) (time.Duration, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ds, err := stats.CriuGetDumpStats(f)
	if err != nil {
		return 0, err
	}
	return time.Duration(ds.GetFrozenTime()) * time.Microsecond, nil
}
