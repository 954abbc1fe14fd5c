// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package lab drives the lab of test/lab/lab.sh from Go tests: hosts a, b
// and client, each a network namespace on one bridge (the LAN), with a
// containerd on a and b. See docs/LAB.md.
//
// Several labs can run on one machine at once: every test package that uses
// the lab must choose its own Name and Subnet.
package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/iorrc/rrc/test/prereq"
)

// Defaults of lab.sh.
const (
	DefaultName   = "rrc"
	DefaultSubnet = "10.77.0"
)

// Hosts of a lab; DaemonHosts run a containerd. WitnessHost is there
// only in a lab with a witness (Lab.Witness).
var (
	Hosts       = []string{"a", "b", "client"}
	DaemonHosts = []string{"a", "b"}
	WitnessHost = "w"
)

// Standard images, imported into every daemon host by Up.
const (
	BusyboxImage = "rrc.local/busybox:latest"
	RedisImage   = "rrc.local/redis:latest"
	// ThreadKVImage is contrib/workloads/threadkv: a multi-threaded Go
	// server speaking the Redis protocol on port 6379.
	ThreadKVImage = "rrc.local/threadkv:latest"
	// LighttpdImage is Debian's lighttpd serving WWWFiles on port 80.
	LighttpdImage = "rrc.local/lighttpd:latest"
	// MemcachedImage is Debian's memcached on port 11211 with four
	// worker threads (-t 4).
	MemcachedImage = "rrc.local/memcached:latest"
	// NondetImage is contrib/workloads/nondet: a line-protocol server on
	// port 7000 whose TIME and RAND replies differ from run to run.
	NondetImage = "rrc.local/nondet:latest"
)

// Lab is one lab instance.
type Lab struct {
	Name   string // LAB: prefix of every name (netns, dirs, containerd namespaces)
	Subnet string // LAB_SUBNET: first three octets, e.g. 10.77.0
	Script string // path of lab.sh
	Images string // LAB_IMAGES: image cache dir ("" = lab.sh default)
	// Logf, if set, receives lab.sh's progress lines and the commands run.
	Logf func(format string, args ...any)
	// Witness: Up adds host w and a three-member etcd on a, b and w
	// (LAB_WITNESS=1; WitnessEndpoints).
	Witness bool
	// Registry: Up runs an OCI registry with TLS on the client host and
	// pushes the standard images into it (LAB_REGISTRY=1; RegistryRef,
	// HostsDir).
	Registry bool
}

// New returns a lab with the given name and subnet ("" = defaults).
func New(name, subnet string) *Lab {
	if name == "" {
		name = DefaultName
	}
	if subnet == "" {
		subnet = DefaultSubnet
	}
	return &Lab{Name: name, Subnet: subnet, Script: ScriptPath()}
}

// FromEnv returns the lab named by $LAB and $LAB_SUBNET (or the defaults).
func FromEnv() *Lab { return New(os.Getenv("LAB"), os.Getenv("LAB_SUBNET")) }

// ScriptPath is the path of lab.sh: $LAB_SCRIPT, or the one next to this
// source file.
func ScriptPath() string {
	if s := os.Getenv("LAB_SCRIPT"); s != "" {
		return s
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "test/lab/lab.sh"
	}
	return filepath.Join(filepath.Dir(file), "lab.sh")
}

// Prerequisites reports what is missing to run a lab: root, lab.sh, and the
// binaries (containerd, ctr, containerd-shim-runc-v2, runc, nsenter, ip,
// iptables, busybox, redis-server, redis-cli, go).
func Prerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat(ScriptPath()); err != nil {
		missing = append(missing, ScriptPath())
	}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter", "ip", "iptables", "ss", "setsid", "redis-server", "redis-cli", "go"} {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing = append(missing, "/bin/busybox (busybox-static)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab prerequisites missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

func lookPath(b string) (string, error) {
	if p, err := exec.LookPath(b); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/go/bin"} {
		p := filepath.Join(d, b)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// Require stops the test when a prerequisite is missing: a skip, or a
// failure under CI (package prereq).
func Require(t testing.TB) {
	t.Helper()
	if err := Prerequisites(); err != nil {
		prereq.Missing(t, "%v", err)
	}
}

// Start stops the test when prerequisites are missing (Require), brings the lab up
// (after a Down, to start clean after an interrupted run) and registers a
// Down at cleanup. Name and subnet as in New.
func Start(t testing.TB, name, subnet string) *Lab {
	t.Helper()
	return StartLab(t, New(name, subnet))
}

// StartLab is Start with a lab of the caller's (a witness, say).
func StartLab(t testing.TB, l *Lab) *Lab {
	t.Helper()
	Require(t)
	l.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := l.Down(ctx); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := l.Down(ctx); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err := l.Up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

func (l *Lab) logf(format string, args ...any) {
	if l.Logf != nil {
		l.Logf(format, args...)
	}
}

// ImageDir is the image cache lab.sh builds the images' OCI archives in
// (busybox.tar, redis.tar, ...): Images, $LAB_IMAGES or lab.sh's default.
func (l *Lab) ImageDir() string {
	if l.Images != "" {
		return l.Images
	}
	if d := os.Getenv("LAB_IMAGES"); d != "" {
		return d
	}
	return "/var/cache/rrc-lab-images"
}

// Env is the environment lab.sh runs with.
func (l *Lab) Env() []string {
	env := append(os.Environ(), "LAB="+l.Name, "LAB_SUBNET="+l.Subnet, "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1")
	if l.Images != "" {
		env = append(env, "LAB_IMAGES="+l.Images)
	}
	if l.Witness {
		env = append(env, "LAB_WITNESS=1")
	}
	if l.Registry {
		env = append(env, "LAB_REGISTRY=1")
	}
	if !strings.Contains(os.Getenv("PATH"), "/usr/sbin") {
		env = append(env, "PATH="+os.Getenv("PATH")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return env
}

// run runs cmd in its own process group (killed whole when ctx ends) and
// returns stdout; the error carries stderr.
func (l *Lab) run(ctx context.Context, cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Run runs lab.sh with args; progress lines go to Logf.
func (l *Lab) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{l.Script}, args...)...)
	cmd.Env = l.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" {
			l.logf("%s", line)
		}
	}
	l.logf("lab.sh %s (%v)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		return stdout.String(), fmt.Errorf("lab.sh %s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Up brings the lab up (idempotent): namespaces, links, containerds, images.
func (l *Lab) Up(ctx context.Context) error { _, err := l.Run(ctx, "up"); return err }

// Down removes everything of the lab; works in any state.
func (l *Lab) Down(ctx context.Context) error { _, err := l.Run(ctx, "down"); return err }

// Crash fail-stops host: its links are cut first, then all its processes
// are killed and its volatile state (netns, mounts, cgroups, /run) dropped.
func (l *Lab) Crash(ctx context.Context, host string) error {
	_, err := l.Run(ctx, "crash", host)
	return err
}

// Restart brings a crashed host back (new netns, links, containerd).
func (l *Lab) Restart(ctx context.Context, host string) error {
	_, err := l.Run(ctx, "restart", host)
	return err
}

// RestartContainerd stops host's containerd with SIGTERM, waits for it to
// exit and starts it again with the same config file and environment; the
// host's shims, containers and network namespace are left alone, and the
// new daemon reconnects to the shims.
func (l *Lab) RestartContainerd(ctx context.Context, host string) error {
	_, err := l.Run(ctx, "restart-containerd", host)
	return err
}

// Status returns lab.sh status.
func (l *Lab) Status(ctx context.Context) (string, error) { return l.Run(ctx, "status") }

// Ctr runs ctr against host's containerd in its namespace; returns stdout.
func (l *Lab) Ctr(ctx context.Context, host string, args ...string) (string, error) {
	ctrBin, err := lookPath("ctr")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, ctrBin, l.CtrArgs(host, args...)...)
	cmd.Env = l.Env()
	return l.run(ctx, cmd)
}

// CtrArgs is the argument list of ctr for host's daemon. Like lab.sh, it
// puts the stdio FIFOs of run, task start and task exec in the host's state
// dir (removed by down) instead of /run/containerd/fifo, where ctr leaves
// those of detached tasks behind.
func (l *Lab) CtrArgs(host string, args ...string) []string {
	out := []string{"--address", l.Address(host), "--namespace", l.Namespace(host)}
	fifo := []string{"--fifo-dir", l.State(host) + "/fifo"}
	switch {
	case len(args) >= 1 && args[0] == "run":
		out = append(append(append(out, args[0]), fifo...), args[1:]...)
	case len(args) >= 2 && (args[0] == "t" || args[0] == "task" || args[0] == "tasks") && (args[1] == "start" || args[1] == "exec"):
		out = append(append(append(out, args[:2]...), fifo...), args[2:]...)
	default:
		out = append(out, args...)
	}
	return out
}

// Command returns (not started) a command running in host's network
// namespace (nsenter --net; the mount namespace stays the host's).
func (l *Lab) Command(ctx context.Context, host string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + l.Netns(host), "--"}, args...)...)
	cmd.Env = l.Env()
	return cmd
}

// Exec runs a command in host's network namespace; returns stdout.
func (l *Lab) Exec(ctx context.Context, host string, args ...string) (string, error) {
	return l.run(ctx, l.Command(ctx, host, args...))
}

func octet(host string) int {
	switch host {
	case "a":
		return 1
	case "b":
		return 2
	case "w":
		return 3
	case "client":
		return 100
	}
	panic("lab: unknown host " + strconv.Quote(host))
}

// IP is host's LAN address (a=.1, b=.2, w=.3, client=.100).
func (l *Lab) IP(host string) string { return fmt.Sprintf("%s.%d", l.Subnet, octet(host)) }

// ServiceIP is the i-th address reserved for container services,
// .200+i (i in 0..50).
func (l *Lab) ServiceIP(i int) string {
	if i < 0 || i > 50 {
		panic("lab: service IP index out of range")
	}
	return fmt.Sprintf("%s.%d", l.Subnet, 200+i)
}

// Prefix is the LAN prefix length.
func (l *Lab) Prefix() int { return 24 }

// NetnsName is the name of host's network namespace (ip netns); host may
// also be "lan".
func (l *Lab) NetnsName(host string) string { return l.Name + "-" + host }

// Netns is the path of host's network namespace.
func (l *Lab) Netns(host string) string { return "/run/netns/" + l.NetnsName(host) }

// Namespace is host's containerd namespace.
func (l *Lab) Namespace(host string) string { return l.Name + "-" + host }

// Address is host's containerd GRPC socket.
func (l *Lab) Address(host string) string { return l.State(host) + "/containerd.sock" }

// TTRPCAddress is host's containerd TTRPC socket.
func (l *Lab) TTRPCAddress(host string) string { return l.Address(host) + ".ttrpc" }

// Root is host's containerd root (its "disk", kept across crash/restart).
func (l *Lab) Root(host string) string { return "/var/lib/" + l.Name + "/" + host }

// State is host's containerd state dir (volatile, wiped by crash).
func (l *Lab) State(host string) string { return "/run/" + l.Name + "/" + host }

// Log is host's containerd log.
func (l *Lab) Log(host string) string { return l.State(host) + "/containerd.log" }

// NetnsInode is the inode of host's network namespace (0 if absent).
func (l *Lab) NetnsInode(host string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(l.Netns(host), &st); err != nil {
		return 0
	}
	return st.Ino
}

// PIDsInNetns lists the live (non-zombie) processes whose network
// namespace has the given inode.
func PIDsInNetns(inode uint64) []int {
	var pids []int
	want := fmt.Sprintf("net:[%d]", inode)
	forEachProc(func(pid int, dir string) {
		if l, err := os.Readlink(dir + "/ns/net"); err == nil && l == want {
			pids = append(pids, pid)
		}
	})
	return pids
}

func forEachProc(f func(pid int, dir string)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := "/proc/" + e.Name()
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		f(pid, dir)
	}
}

// HostPIDs lists the processes of host: in its network namespace, or
// naming its state or root dir (its containerd, shims, etcd member,
// registry), or in its containerd namespace's cgroups.
func (l *Lab) HostPIDs(host string) []int {
	ino := l.NetnsInode(host)
	want := fmt.Sprintf("net:[%d]", ino)
	st, rt := l.State(host)+"/", l.Root(host)+"/"
	cg := ":/" + l.Namespace(host) + "/"
	var pids []int
	forEachProc(func(pid int, dir string) {
		if ino != 0 {
			if n, err := os.Readlink(dir + "/ns/net"); err == nil && n == want {
				pids = append(pids, pid)
				return
			}
		}
		if cmd, err := os.ReadFile(dir + "/cmdline"); err == nil && (bytes.Contains(cmd, []byte("\x00"+st)) || bytes.Contains(cmd, []byte("\x00"+rt))) {
			pids = append(pids, pid)
			return
		}
		if c, err := os.ReadFile(dir + "/cgroup"); err == nil && bytes.Contains(c, []byte(cg)) {
			pids = append(pids, pid)
		}
	})
	return pids
}

// cgroupMounts lists the mount points of cgroup v1 hierarchies and v2.
func cgroupMounts() []string { return mounts(mountinfo.FSTypeFilter("cgroup", "cgroup2")) }

func mountPoints() []string { return mounts(nil) }

func mounts(filter mountinfo.FilterFunc) []string {
	infos, err := mountinfo.GetMounts(filter)
	if err != nil {
		return nil
	}
	mps := make([]string, 0, len(infos))
	for _, m := range infos {
		mps = append(mps, m.Mountpoint)
	}
	return mps
}

// HostLeftovers describes what remains of host (processes, mounts, cgroups,
// runc state, netns, /run state other than logs); empty when the host is
// fully down, as after Crash.
func (l *Lab) HostLeftovers(host string) []string {
	var out []string
	if _, err := os.Lstat(l.Netns(host)); err == nil {
		out = append(out, "netns "+l.Netns(host))
	}
	if pids := l.HostPIDs(host); len(pids) > 0 {
		for _, pid := range pids {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			out = append(out, fmt.Sprintf("process %d %s", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))))
		}
	}
	st := l.State(host)
	for _, mp := range mountPoints() {
		if mp == st || strings.HasPrefix(mp, st+"/") {
			out = append(out, "mount "+mp)
		}
	}
	for _, mp := range cgroupMounts() {
		d := filepath.Join(mp, l.Namespace(host))
		if _, err := os.Stat(d); err == nil {
			out = append(out, "cgroup "+d)
		}
	}
	if _, err := os.Stat("/run/containerd/runc/" + l.Namespace(host)); err == nil {
		out = append(out, "runc state /run/containerd/runc/"+l.Namespace(host))
	}
	// After a crash the state dir keeps only the logs.
	if ents, err := os.ReadDir(st); err == nil {
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".log") {
				out = append(out, "file "+filepath.Join(st, e.Name()))
			}
		}
	}
	return out
}

// Leftovers describes what remains of the whole lab; empty after Down.
func (l *Lab) Leftovers() []string {
	var out []string
	for _, h := range append(append([]string{"lan"}, Hosts...), WitnessHost) {
		if h != "lan" {
			out = append(out, l.HostLeftovers(h)...)
		} else if _, err := os.Lstat(l.Netns(h)); err == nil {
			out = append(out, "netns "+l.Netns(h))
		}
	}
	for _, d := range []string{"/run/" + l.Name, "/var/lib/" + l.Name} {
		if _, err := os.Stat(d); err == nil {
			out = append(out, "dir "+d)
		}
		for _, mp := range mountPoints() {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				out = append(out, "mount "+mp)
			}
		}
	}
	return dedup(out)
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// WaitFor polls cond every 50 ms until it returns nil or timeout passes,
// and returns its last error.
func WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Partition drops every frame from host x to host y in the LAN's bridge,
// and from y to x unless oneway (their containers' links included).
func (l *Lab) Partition(ctx context.Context, x, y string, oneway bool) error {
	args := []string{"partition", x, y}
	if oneway {
		args = append(args, "oneway")
	}
	_, err := l.Run(ctx, args...)
	return err
}

// Isolate drops every frame from and to host x.
func (l *Lab) Isolate(ctx context.Context, x string) error {
	_, err := l.Run(ctx, "isolate", x)
	return err
}

// Heal removes every partition.
func (l *Lab) Heal(ctx context.Context) error {
	_, err := l.Run(ctx, "heal")
	return err
}

// WitnessEndpoints are the client URLs of the lab's etcd members.
func (l *Lab) WitnessEndpoints(ctx context.Context) ([]string, error) {
	out, err := l.Run(ctx, "witness-endpoints")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(out), ","), nil
}
