// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build measure

package criu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/lab"
)

// TestMeasureCheckpointPause is the measurement behind docs/CHECKPOINT.md
// and part 2 of make bench (test/bench/bench.sh), not a timed assertion.
// It is built only with the build tag measure, so that a normal test run
// neither runs nor skips it:
//
//	RRC_MEASURE_KEYS=100000 RRC_MEASURE_N=20 \
//	  go test -tags measure ./runtime/criu -run TestMeasureCheckpointPause -v -timeout 10m
//
// It loads Redis with KEYS records of 100 bytes (redis-cli --pipe from the
// lab client), then takes N rounds of checkpoints, one per 100 ms epoch, each
// round with Checkpointer (FastDumpOptions), Checkpointer (runc's CRIU
// options) and `runc checkpoint --leave-running` (the baseline); logs pause
// mean/p90 and sizes; then crashes host a and times the restore.
// RRC_MEASURE_NICE=-10 runs CRIU at nice -10. RRC_MEASURE_CONNS=N keeps N
// idle client connections open to Redis (CRIU dumps each with TCP repair).
func TestMeasureCheckpointPause(t *testing.T) {
	keys := envInt("RRC_MEASURE_KEYS", 100000)
	n := envInt("RRC_MEASURE_N", 20)
	l := testLab(t)
	// 9 minutes, or up to the test's own deadline (-timeout) less a margin
	// for the cleanup: 10 M records take longer to load and to checkpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	if d, ok := t.Deadline(); ok && time.Until(d) > 10*time.Minute {
		cancel()
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	defer cancel()
	const id = "measure"
	ip := runRedis(ctx, t, l, id)
	loadRedis(ctx, t, l, ip, keys)
	runcRoot := "/run/containerd/runc/" + l.Namespace("a")
	st, err := ReadRuncState(runcRoot, id)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < envInt("RRC_MEASURE_CONNS", 0); i++ {
		nc, err := lab.DialInNetns(l.Netns("client"), ip+":6379")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := lab.NewRedisConn(nc).Do("PING"); err != nil {
			t.Fatal(err)
		}
	}
	rss, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.InitPid))
	t.Logf("redis loaded with %d keys; %s", keys, grepLine(rss, "VmRSS"))

	// ~190 bytes of image per record of 100 bytes. Kept at a time: the
	// incremental checkpointer's parent and its merge's spare, and one
	// checkpoint of another variant; so 10 M records need more than the
	// default 2 GiB.
	imagesSize := max(int64(2)<<30, int64(keys)*768)
	images := imageTmpfsSize(t, imagesSize)
	// The same on a tmpfs of 4 KiB pages only (what MountImageTmpfs mounted
	// before it asked for large folios), for the side-by-side ratio.
	smallPages := imageTmpfsPages(t, imagesSize, false)
	// Four variants, interleaved so that the load of a shared machine falls
	// on all of them alike: Checkpointer with FastDumpOptions (on the image
	// tmpfs and on the 4 KiB-page one), Checkpointer with runc's CRIU
	// options, and `runc checkpoint --leave-running`.
	newCheckpointer := func(o DumpOptions, mem *MemoryTracking) *Checkpointer {
		c, err := NewCheckpointer(ctx, CheckpointerConfig{
			RuncRoot: runcRoot, ID: id,
			CRIU:              CRIUCommand{Argv: []string{"nsenter", "--net=" + l.Netns("a"), "criu"}, Nice: envInt("RRC_MEASURE_NICE", 0)},
			Dump:              o,
			CaptureRootfsDiff: true,
			Memory:            mem,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	fastOpts := FastDumpOptions()
	fastOpts.LogLevel = envInt32("RRC_MEASURE_LOGLEVEL", fastOpts.LogLevel)
	c := newCheckpointer(fastOpts, nil)
	runcLike := newCheckpointer(DumpOptions{LogLevel: fastOpts.LogLevel, TCPSkipInFlight: true}, nil)
	// Incremental memory dumps (the shim's default): CRIU copies what was
	// written since this Checkpointer's previous dump, one round ago.
	incremental := newCheckpointer(fastOpts, memoryTracking(t))
	type series struct{ pause, freeze, dump, diff, thaw, criuFrozen, merge []time.Duration }
	var fast, fast4k, like, incr series
	var fastBytes, fast4kBytes, likeBytes, incrBytes, runcBytes int64
	var incrPages, incrParent uint64
	var wall, runcPause []time.Duration
	measure := func(c *Checkpointer, s *series, bytes *int64, dir string) {
		st, err := c.Checkpoint(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		s.pause, s.freeze, s.dump = append(s.pause, st.Pause), append(s.freeze, st.Freeze), append(s.dump, st.Dump)
		s.diff, s.thaw, s.criuFrozen = append(s.diff, st.RootfsDiff), append(s.thaw, st.Thaw), append(s.criuFrozen, st.CRIUFrozen)
		s.merge = append(s.merge, st.Merge)
		*bytes = st.ImageBytes
		if c == incremental {
			incrPages, incrParent = incrPages+st.CRIUPages, incrParent+st.ParentPages
		}
		if keep := os.Getenv("RRC_MEASURE_KEEPLOG"); keep != "" {
			// One log per variant: KEEPLOG.fast, KEEPLOG.like.
			b, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
			if err := os.WriteFile(keep+"."+strings.TrimRight(filepath.Base(dir), "0123456789"), b, 0o644); err != nil {
				t.Error(err)
			}
		}
		os.RemoveAll(dir)
		time.Sleep(100 * time.Millisecond) // the epoch
	}
	for i := 0; i < n; i++ {
		measure(c, &fast, &fastBytes, filepath.Join(images, fmt.Sprintf("fast%d", i)))
		measure(c, &fast4k, &fast4kBytes, filepath.Join(smallPages, fmt.Sprintf("fast4k%d", i)))
		measure(runcLike, &like, &likeBytes, filepath.Join(images, fmt.Sprintf("like%d", i)))
		measure(incremental, &incr, &incrBytes, filepath.Join(images, fmt.Sprintf("incr%d", i)))

		// Baseline: runc checkpoint, in a's network namespace as
		// containerd's shim would run it.
		dir := filepath.Join(images, fmt.Sprintf("runc%d", i))
		start := time.Now()
		if _, err := launch.Command(ctx, launch.OS{}, nil, "nsenter", "--net="+l.Netns("a"), "runc", "--root", runcRoot,
			"checkpoint", "--leave-running", "--tcp-established", "--image-path", dir, "--work-path", dir, id); err != nil {
			t.Fatal(err)
		}
		wall = append(wall, time.Since(start))
		if d, err := os.Open(dir); err == nil {
			if p, err := readDumpStats(d); err == nil {
				runcPause = append(runcPause, p)
			}
			d.Close()
		}
		runcBytes, _ = dirSize(dir)
		os.RemoveAll(dir)
		time.Sleep(100 * time.Millisecond)
	}
	report := func(name string, s series, bytes int64) {
		t.Logf("%s, %d checkpoints: pause %s", name, n, summary(s.pause))
		t.Logf("  freeze %s", summary(s.freeze))
		t.Logf("  criu dump %s (criu's own frozen time %s)", summary(s.dump), summary(s.criuFrozen))
		t.Logf("  rootfs diff + tmpfs archives %s", summary(s.diff))
		t.Logf("  thaw %s", summary(s.thaw))
		t.Logf("  checkpoint bytes %d", bytes)
		if s.merge[0] > 0 || s.merge[len(s.merge)-1] > 0 {
			t.Logf("  merge with the parent, after the thaw %s", summary(s.merge))
		}
	}
	report("Checkpointer FastDumpOptions", fast, fastBytes)
	report("Checkpointer FastDumpOptions, images on 4 KiB-page tmpfs", fast4k, fast4kBytes)
	report("Checkpointer runc's CRIU options", like, likeBytes)
	report("Checkpointer FastDumpOptions, incremental memory", incr, incrBytes)
	t.Logf("  pages copied by CRIU %d, left in the parent %d (all checkpoints)", incrPages, incrParent)
	t.Logf("runc checkpoint --leave-running, %d checkpoints: wall %s", n, summary(wall))
	t.Logf("  pause (criu freezing+frozen time) %s", summary(runcPause))
	t.Logf("  checkpoint bytes %d", runcBytes)

	// Restore: last checkpoint, host a crashed and restarted, runc restore.
	last := filepath.Join(images, "last")
	if _, err := c.Checkpoint(ctx, last); err != nil {
		t.Fatal(err)
	}
	res, prepDur := crashAndRestore(ctx, t, l, st, last, "measure-restored")
	out, err := l.Exec(ctx, "client", "redis-cli", "-h", ip, "dbsize")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: bundle+rootfs %.1fms, runc restore %.1fms; dbsize after restore %s",
		float64(prepDur)/1e6, float64(res.Duration)/1e6, bytes2str(out))
}

func bytes2str(s string) string { return string(bytes.TrimSpace([]byte(s))) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envInt32(name string, def int32) int32 { return int32(envInt(name, int(def))) }

func grepLine(b []byte, prefix string) string {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte(prefix)) {
			return string(bytes.Join(bytes.Fields(l), []byte(" ")))
		}
	}
	return ""
}

// summary is "mean X, p50 Y, p90 Z, max W".
func summary(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	p := func(q float64) time.Duration { return s[int(q*float64(len(s)-1)+0.5)] }
	r := func(v time.Duration) string { return fmt.Sprintf("%.2fms", float64(v)/1e6) }
	return fmt.Sprintf("mean %s, min %s, p50 %s, p90 %s, max %s", r(sum/time.Duration(len(s))), r(s[0]), r(p(0.5)), r(p(0.9)), r(s[len(s)-1]))
}
