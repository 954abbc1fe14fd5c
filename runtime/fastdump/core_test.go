// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/test/prereq"
)

// freezerCgroup makes a cgroup v1 freezer cgroup for the test, named after
// the test process; those of test processes gone (a test binary killed on a
// timeout runs no clean-up) are emptied and removed first.
func freezerCgroup(t *testing.T) string {
	t.Helper()
	prereq.Path(t, "/sys/fs/cgroup/freezer", "the cgroup v1 freezer")
	stale, _ := filepath.Glob("/sys/fs/cgroup/freezer/rrcfastdump-*")
	for _, d := range stale {
		owner, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "rrcfastdump-"))
		if err == nil && unix.Kill(owner, 0) == nil {
			continue // a test running now
		}
		removeCgroup(t, d)
	}
	dir := fmt.Sprintf("/sys/fs/cgroup/freezer/rrcfastdump-%d", os.Getpid())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })
	return dir
}

// removeCgroup thaws a test cgroup, kills what is left in it and removes it.
func removeCgroup(t *testing.T, dir string) {
	t.Helper()
	setFreezer(t, dir, "THAWED")
	for _, pid := range cgroupTasks(t, dir) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for i := 0; i < 100; i++ {
		if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("cgroup %s not removed", dir)
}

// setFreezer freezes ("FROZEN") or thaws the test cgroup with the
// checkpointer's own Freezer.
func setFreezer(t *testing.T, dir, state string) {
	t.Helper()
	f := &criu.Freezer{Dir: dir}
	ctx := context.Background()
	var err error
	if state == "FROZEN" {
		err = f.Freeze(ctx)
	} else {
		err = f.Thaw(ctx)
	}
	if err != nil {
		t.Fatalf("freezer %s: %v", state, err)
	}
}

func cgroupTasks(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "tasks"))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		tids = append(tids, n)
	}
	return tids
}

// The workload, built once for the package's tests by TestMain.
var workloadBin string
var workloadErr error

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fastdump-workload-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workloadBin = filepath.Join(dir, "workload")
	build := exec.Command("go", "build", "-o", workloadBin, "./testdata/workload")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // no C library: its allocator maps memory at will
	if out, err := build.CombinedOutput(); err != nil {
		workloadErr = fmt.Errorf("build the workload: %w\n%s", err, out)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startWorkload starts testdata/workload (built without the race
// detector, whose runtime keeps making mappings, and without cgo) in the
// cgroup.
func startWorkload(t *testing.T, cgroup string, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	if workloadErr != nil {
		t.Fatal(workloadErr)
	}
	cmd := exec.Command(workloadBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A frozen process cannot die: thawed first, also after a
		// failure inside the freeze.
		setFreezer(t, cgroup, "THAWED")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	waitSteady(t, cmd.Process.Pid, cgroup)
	return cmd, bufio.NewReader(stdout)
}

// dialWorkload reads the port a workload started with -listen prints and
// opens n connections to it, closed when the test ends.
func dialWorkload(t *testing.T, out *bufio.Reader, n int) []net.Conn {
	t.Helper()
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strings.TrimSpace(line)
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns
}

// waitSteady waits until the workload's threads and mappings stay the same
// for half a second: the fast path rightly refuses changed ones, and the Go
// runtime still makes some after start-up.
func waitSteady(t *testing.T, pid int, cgroup string) {
	t.Helper()
	state := func() string {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(cgroupTasks(t, cgroup)) + string(maps)
	}
	last, since := state(), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if s := state(); s != last {
			last, since = s, time.Now()
		} else if time.Since(since) > 500*time.Millisecond && len(cgroupTasks(t, cgroup)) >= 5 {
			return
		}
	}
	t.Fatalf("the workload's threads or mappings kept changing for 20 s")
}

func criuDump(t *testing.T, pid int, dir string, args ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-o", "dump.log", "-v4", "--leave-running"}, args...)
	if out, err := exec.Command("criu", argv...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		t.Fatalf("criu %v: %v\n%s\n%s", argv, err, out, log)
	}
}

// TestPatchedCoreMatchesCRIU stops a running program's threads, captures
// their registers and signal masks, and patches them into the core images
// of an earlier CRIU dump; then CRIU dumps the same stopped state, and each
// thread's registers, FPU and extended state and signal mask must be what
// CRIU wrote, field by field.
func TestPatchedCoreMatchesCRIU(t *testing.T) {
	prereq.Root(t, "ptrace, cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, _ := startWorkload(t, cg)
	pid := cmd.Process.Pid
	tmp := t.TempDir()
	before, after := filepath.Join(tmp, "before"), filepath.Join(tmp, "after")
	criuDump(t, pid, before)
	time.Sleep(150 * time.Millisecond) // it runs on: its registers change

	runtime.LockOSThread() // the tracer thread; it dies with the test's goroutine
	setFreezer(t, cg, "FROZEN")
	tids := cgroupTasks(t, cg)
	s, err := Seize(tids)
	if err != nil {
		t.Fatal(err)
	}
	setFreezer(t, cg, "THAWED")
	if err := s.Wait(5 * time.Second); err != nil {
		_ = s.Detach()
		t.Fatal(err)
	}
	size := XStateSize()
	threads := make([]Thread, 0, len(tids))
	for _, tid := range tids {
		th, err := CaptureThread(tid, size)
		if err != nil {
			_ = s.Detach()
			t.Fatal(err)
		}
		threads = append(threads, th)
	}
	// Frozen before the detach, so that CRIU finds them as they were.
	setFreezer(t, cg, "FROZEN")
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	criuDump(t, pid, after, "--freeze-cgroup", cg)
	setFreezer(t, cg, "THAWED")

	layout := readXstateLayout()
	compared := 0
	for _, th := range threads {
		name := fmt.Sprintf("core-%d.img", th.Tid)
		prev, err := os.ReadFile(filepath.Join(before, name))
		if errors.Is(err, os.ErrNotExist) {
			// A thread the Go runtime started since: the fast path
			// falls back to CRIU for it; nothing to patch here.
			t.Logf("thread %d is new since the first dump", th.Tid)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		compared++
		patched, err := PatchCore(prev, th, th.Tid == pid, layout)
		if err != nil {
			t.Fatal(err)
		}
		got, want := decodeCore(t, patched), decodeCore(t, mustRead(t, filepath.Join(after, name)))
		if !proto.Equal(got.ThreadInfo.Gpregs, want.ThreadInfo.Gpregs) {
			t.Errorf("thread %d: registers\n got %v\nwant %v", th.Tid, got.ThreadInfo.Gpregs, want.ThreadInfo.Gpregs)
		}
		if !proto.Equal(got.ThreadInfo.Fpregs, want.ThreadInfo.Fpregs) {
			t.Errorf("thread %d: FPU and extended state differ", th.Tid)
		}
		if gm, wm := sigmask(got, th.Tid == pid), sigmask(want, th.Tid == pid); gm != wm {
			t.Errorf("thread %d: signal mask %#x, CRIU %#x", th.Tid, gm, wm)
		}
		if old := decodeCore(t, prev); proto.Equal(old.ThreadInfo.Gpregs, want.ThreadInfo.Gpregs) {
			t.Logf("thread %d: registers did not change between the dumps", th.Tid)
		}
	}
	if compared < 5 {
		t.Errorf("%d threads compared of %d", compared, len(threads))
	}
	t.Logf("%d threads compared", compared)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeCore(t *testing.T, img []byte) *criucore.CoreEntry {
	t.Helper()
	rec, err := criuimage.DecodeCore(img)
	if err != nil {
		t.Fatal(err)
	}
	var c criucore.CoreEntry
	if err := proto.Unmarshal(rec, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func sigmask(c *criucore.CoreEntry, leader bool) uint64 {
	if leader {
		return c.GetTc().GetBlkSigset()
	}
	return c.GetThreadCore().GetBlkSigset()
}
