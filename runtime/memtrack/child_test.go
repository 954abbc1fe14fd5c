// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build amd64

package memtrack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// The test binary runs itself as the tracked child when childEnv is set
// ("plain", or "seccomp" for a child with an allow-all seccomp filter).
const childEnv = "MEMTRACK_TEST_CHILD"

const childPages = 256

// helperPath is cmd/rrc-uffd, built by TestMain.
var helperPath string

func init() {
	if os.Getenv(childEnv) != "" {
		// The child's main goroutine runs on its main thread (tid = pid),
		// the thread the helper interrupts: its reads of stdin and its
		// sleeps are the system calls that the injection must restart.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	dir, err := os.MkdirTemp("", "memtrack-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperPath = filepath.Join(dir, "rrc-uffd")
	out, err := exec.Command("go", "build", "-o", helperPath, "github.com/iorrc/rrc/cmd/rrc-uffd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build rrc-uffd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sink keeps the child's reads from being optimised away.
var sink byte

// childMain is the tracked child: it maps an anonymous region of childPages
// pages, touches them all, prints "ready ADDR" and executes commands read
// from stdin, one per line, answering "ok ..." after each:
//
//	write I [R]     write a byte into page I of region R (default 0)
//	read I [R]      read page I
//	dontneed I [R]  MADV_DONTNEED page I
//	mmap N          map and touch a new region of N pages: "ok R ADDR"
//	mmaphuge N      same, 2 MiB aligned and MADV_HUGEPAGE (N a multiple of 512)
//	mremap [R]      move region R elsewhere: "ok ADDR"
//	fork            fork a child that exits at once, and reap it
//	sleep MS        one nanosleep: "ok ELAPSED_NS ERRNO"
//	spin MS         busy-loop in user space
//	exec            exec itself again (a new address space, same pid)
//	exit
func childMain(mode string) int {
	if filter, ok := seccompFilters[mode]; ok {
		if err := installSeccomp(filter); err != nil {
			fmt.Fprintln(os.Stderr, "child: seccomp:", err)
			return 1
		}
	}
	regions := [][]byte{mapTouched(childPages)}
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	reply("ready %x", uintptr(unsafe.Pointer(&regions[0][0])))
	in := bufio.NewReader(stdinReader{})
	counter := byte(1)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: read stdin:", err)
			return 3
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			reply("error empty command")
			continue
		}
		arg := func(i, def int) int {
			if i >= len(f) {
				return def
			}
			v, err := strconv.Atoi(f[i])
			if err != nil {
				reply("error %v", err)
				return -1
			}
			return v
		}
		page := func() []byte {
			i, r := arg(1, 0), arg(2, 0)
			if i < 0 || r < 0 || r >= len(regions) || (i+1)*4096 > len(regions[r]) {
				return nil
			}
			return regions[r][i*4096 : (i+1)*4096]
		}
		switch f[0] {
		case "write":
			p := page()
			if p == nil {
				reply("error bad page")
				continue
			}
			counter++
			if counter == 0 {
				counter = 1
			}
			p[0] = counter
			reply("ok")
		case "read":
			p := page()
			if p == nil {
				reply("error bad page")
				continue
			}
			sink += p[0]
			reply("ok")
		case "dontneed":
			p := page()
			if p == nil {
				reply("error bad page")
				continue
			}
			if err := unix.Madvise(p, unix.MADV_DONTNEED); err != nil {
				reply("error %v", err)
				continue
			}
			reply("ok")
		case "mmap":
			regions = append(regions, mapTouched(arg(1, 64)))
			r := regions[len(regions)-1]
			reply("ok %d %x", len(regions)-1, uintptr(unsafe.Pointer(&r[0])))
		case "mmaphuge":
			b, err := mapHuge(arg(1, 512))
			if err != nil {
				reply("error %v", err)
				continue
			}
			regions = append(regions, b)
			reply("ok %d %x", len(regions)-1, uintptr(unsafe.Pointer(&b[0])))
		case "mremap":
			r := arg(1, 0)
			moved, err := moveRegion(regions[r])
			if err != nil {
				reply("error %v", err)
				continue
			}
			regions[r] = moved
			reply("ok %x", uintptr(unsafe.Pointer(&moved[0])))
		case "fork":
			if err := forkAndReap(); err != nil {
				reply("error %v", err)
				continue
			}
			reply("ok")
		case "sleep":
			ts := unix.NsecToTimespec(int64(arg(1, 0)) * int64(time.Millisecond))
			start := time.Now()
			_, _, errno := unix.Syscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
			reply("ok %d %d", time.Since(start).Nanoseconds(), int(errno))
		case "spin":
			until := time.Now().Add(time.Duration(arg(1, 0)) * time.Millisecond)
			for time.Now().Before(until) {
			}
			reply("ok")
		case "exec":
			self, err := os.Executable()
			if err == nil {
				err = syscall.Exec(self, []string{self}, os.Environ())
			}
			reply("error %v", err)
		case "exit":
			reply("ok")
			return 0
		default:
			reply("error unknown command %q", f[0])
		}
	}
}

// stdinReader reads fd 0 with plain read(2) on the calling thread (no
// poller), so that the child's main thread blocks in read.
type stdinReader struct{}

func (stdinReader) Read(b []byte) (int, error) {
	n, err := unix.Read(0, b)
	if err != nil {
		return 0, err // EINTR included: the injection must not cause it
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func mapTouched(pages int) []byte {
	b, err := unix.Mmap(-1, 0, pages*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		panic(err)
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

// mapHuge maps a region of pages pages aligned to 2 MiB, asks for
// transparent huge pages and touches it.
func mapHuge(pages int) ([]byte, error) {
	const huge = 2 << 20
	size := pages * 4096
	b, err := unix.Mmap(-1, 0, size+huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	off := (huge - int(uintptr(unsafe.Pointer(&b[0])))%huge) % huge
	b = b[off : off+size : off+size]
	if err := unix.Madvise(b, unix.MADV_HUGEPAGE); err != nil {
		return nil, err
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b, nil
}

// moveRegion moves b to a new address with mremap(MREMAP_FIXED).
func moveRegion(b []byte) ([]byte, error) {
	dst, err := unix.Mmap(-1, 0, len(b), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	to := uintptr(unsafe.Pointer(&dst[0]))
	r, _, errno := unix.Syscall6(unix.SYS_MREMAP, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(len(b)),
		unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to, 0)
	if errno != 0 {
		return nil, errno
	}
	if r != to {
		return nil, fmt.Errorf("mremap moved to %#x, want %#x", r, to)
	}
	return dst, nil // the same slice header fits the moved pages
}

// forkAndReap forks a process that exits at once (a real fork: the pages
// become copy-on-write shared) and reaps it.
func forkAndReap() error {
	// Signals blocked across the fork: the forked copy must run no Go
	// code (no signal handler) before it exits.
	all, old := ^uint64(0), uint64(0)
	syscall.ForkLock.Lock()
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	pid, _, errno := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
	if errno == 0 && pid == 0 {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return errno
	}
	var ws unix.WaitStatus
	_, err := unix.Wait4(int(pid), &ws, 0, nil)
	return err
}

// seccompFilters are the child's modes with a seccomp filter (classic BPF):
// "seccomp" allows everything; "seccomp-kill-uffd" kills the process that
// calls userfaultfd(2), which the injection does.
var seccompFilters = map[string][]unix.SockFilter{
	"seccomp": {{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}},
	"seccomp-kill-uffd": {
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: sysUserfaultfd, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	},
}

// installSeccomp installs filter on all threads.
func installSeccomp(filter []unix.SockFilter) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	return nil
}

// child is a running test child.
type child struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.Writer
	outF *os.File
	out  *bufio.Reader
	pid  int
	base uint64 // region 0
}

func startChild(t *testing.T, mode string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = outW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	c := &child{t: t, cmd: cmd, in: in, outF: outR, out: bufio.NewReader(outR), pid: cmd.Process.Pid}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		outR.Close()
	})
	c.base = c.readyAddr()
	return c
}

func (c *child) readyAddr() uint64 {
	c.t.Helper()
	line := c.line()
	addr, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		c.t.Fatalf("child said %q, want ready ADDR", line)
	}
	v, err := strconv.ParseUint(addr, 16, 64)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *child) line() string {
	c.t.Helper()
	c.outF.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.out.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read from child: %v (got %q)", err, s)
	}
	return strings.TrimSpace(s)
}

// send sends a command without waiting for the answer.
func (c *child) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.t.Fatalf("send %q: %v", cmd, err)
	}
}

// reply reads the answer to a command sent and returns what follows "ok".
func (c *child) reply(cmd string) string {
	c.t.Helper()
	line := c.line()
	if line != "ok" && !strings.HasPrefix(line, "ok ") {
		c.t.Fatalf("child answered %q to %q", line, cmd)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ok"))
}

func (c *child) do(cmds ...string) string {
	c.t.Helper()
	var last string
	for _, cmd := range cmds {
		c.send(cmd)
		last = c.reply(cmd)
	}
	return last
}

// waitSyscall waits until the child's main thread is blocked in one of the
// system calls nrs (/proc/PID/syscall).
func (c *child) waitSyscall(nrs ...int) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", c.pid))
		if err != nil {
			c.t.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			for _, nr := range nrs {
				if f[0] == strconv.Itoa(nr) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("child not blocked in system call %v: /proc/%d/syscall %q", nrs, c.pid, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// uffdCount counts the userfaultfds open in the child.
func (c *child) uffdCount() int {
	c.t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", c.pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "anon_inode:[userfaultfd]" {
			n++
		}
	}
	return n
}

func take(t *testing.T, pid int) *os.File {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := Take(ctx, []string{helperPath}, launch.OS{}, pid)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// attach takes a userfaultfd of the child and attaches a Tracker, closed at
// the end of the test.
func (c *child) attach() *Tracker {
	c.t.Helper()
	tr, err := Attach(c.pid, take(c.t, c.pid))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { tr.Close() })
	return tr
}
