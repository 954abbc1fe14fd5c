// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

// dockerBin holds dockerd and docker as contrib/setup/frontends/40-docker.sh
// installs them (Debian's docker.io and docker-cli, unpacked).
const dockerBin = "/opt/rrc/docker/bin"

// TestDockerFailover replicates Redis started with `docker run --runtime
// rrc`: one dockerd per lab host, in the host's network namespace, on the
// host's containerd, configured by contrib/config/docker-daemon.json (the
// runtime rrc of type io.rrc.v1) and the lab's per-host flags. The backup
// on b first, then the primary on a, both with --network none and the
// service address in io.rrc.* annotations; a client keeps a connection
// busy, a is crashed, the client carries on on the same connection with
// nothing acknowledged lost, and docker on b drives the restored task.
func TestDockerFailover(t *testing.T) {
	prereq.Path(t, filepath.Join(dockerBin, "dockerd"), "contrib/setup/frontends/40-docker.sh installs it")
	rl := startReplicationLab(t, "rrcdock", "10.103.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The backup's daemon first: a's is killed by the crash.
	db, da := startDockerd(ctx, t, l, "b"), startDockerd(ctx, t, l, "a")
	for _, d := range []*dockerd{da, db} {
		// The runtime's type shows in containerd's record (below), not here.
		if out := d.must(ctx, "info", "--format", "{{json .Runtimes}}"); !strings.Contains(out, `"rrc":`) {
			t.Fatalf("docker info on %s: runtimes %s, want rrc (contrib/config/docker-daemon.json)", d.host, out)
		}
		d.must(ctx, "load", "-i", filepath.Join(l.ImageDir(), "redis.tar"))
	}

	t.Run("docker network refused", func(t *testing.T) { dockerNetworkRefused(ctx, t, da) })

	const name = "redis1"
	serviceIP := l.Subnet + ".220"
	listen := l.IP("b") + ":7100"
	run := func(d *dockerd, role ...string) string {
		args := append([]string{"run", "-d", "--name", name, "--runtime", "rrc", "--network", "none",
			"--annotation", "io.rrc.pair=" + name,
			"--annotation", "io.rrc.service-ip=" + serviceIP + "/24", "--annotation", "io.rrc.service-link=eth0"}, role...)
		return strings.TrimSpace(d.must(ctx, append(args, redis)...))
	}
	// Docker names each container with an ID of its own: io.rrc.pair
	// pairs them.
	idB := run(db, "--annotation", "io.rrc.role=backup", "--annotation", "io.rrc.listen="+listen,
		"--annotation", "io.rrc.peer-name="+l.IP("a"))
	b := host{t: t, lab: l, name: "b"}
	if st := b.taskStatus(ctx, idB); st != "RUNNING" {
		t.Fatalf("backup's standby task: %q, want RUNNING", st)
	}
	// dockerd takes the placeholder's pid (the shim's) for the container's.
	t.Logf("docker inspect on b before the failover: pid, sandbox: %s; the shim's pid: %d",
		strings.TrimSpace(db.must(ctx, "inspect", "--format", "{{.State.Pid}} {{.NetworkSettings.SandboxKey}}", name)), findShim(l.Namespace("b"), idB))
	idA := run(da, "--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer="+listen)
	waitStatus(t, l, "a", idA, "primary in sync", 30*time.Second, isState(replication.StateInSync))
	waitStatus(t, l, "b", idB, "backup in sync", 10*time.Second, isState(replication.StateInSync))
	for h, id := range map[string]string{"a": idA, "b": idB} {
		rt := containerRuntime(ctx, t, host{t: t, lab: l, name: h}, id)
		t.Logf("containerd's record of %s's container: runtime %s, options %s", h, rt.Name, rt.Options)
		if rt.Name != rrc {
			t.Errorf("containerd's record of %s's container: runtime %q, want %s", h, rt.Name, rrc)
		}
	}

	cl := redisClient(ctx, t, l, serviceIP+":6379", 25)
	failOverLogged(ctx, t, l, l.Namespace("b"), idB, cl)

	// docker on b drives the restored task as its container.
	if out := db.must(ctx, "inspect", "--format", "{{.State.Status}}", name); strings.TrimSpace(out) != "running" {
		t.Errorf("docker inspect on b after the failover: %q, want running", out)
	}
	// dockerd's network sysctl, which runc restore refuses in the standby
	// namespace: the shim set it there.
	if out := db.must(ctx, "exec", name, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(out) != "0" {
		t.Errorf("net.ipv4.ip_unprivileged_port_start in the restored container: %q, want dockerd's 0", out)
	}
	if out, err := db.docker(ctx, "exec", name, "sh", "-c", "exit 7"); exitCode(err) != 7 {
		t.Errorf("docker exec in the restored container: %v (%s), want the exec's own exit 7", err, out)
	}
	db.must(ctx, "rm", "-f", name)
	nothingLeft(t, l, "b", idB)
}

// dockerNetworkRefused: a container on a docker network (here macvlan) is
// refused as a replica. dockerd attaches the network after the task is
// created (its spec asks for a fresh network namespace and names none), so
// there is no namespace for the shim to adopt before the process runs.
func dockerNetworkRefused(ctx context.Context, t *testing.T, d *dockerd) {
	const net, name = "rrcmacvlan", "refused1"
	d.must(ctx, "network", "create", "-d", "macvlan", "-o", "parent=eth0",
		"--subnet", d.l.Subnet+".0/24", "--gateway", d.l.Subnet+".254", net)
	defer d.must(ctx, "network", "rm", net)
	out, err := d.docker(ctx, "run", "-d", "--name", name, "--runtime", "rrc", "--network", net,
		"--ip", d.l.Subnet+".221", "--cap-drop", "NET_RAW", "--cap-drop", "NET_ADMIN", "--annotation", "io.rrc.pair="+name,
		"--annotation", "io.rrc.role=primary", "--annotation", "io.rrc.peer="+d.l.IP("b")+":7101", redis)
	if err == nil || !strings.Contains(out, "fresh network namespace that nobody can reach") {
		t.Errorf("docker run --network %s of a primary: %v: %s, want the shim's refusal", net, err, out)
	}
	t.Logf("docker run --network %s of a primary: %s", net, lineWith(out, "io.rrc.role"))
	d.must(ctx, "rm", "-f", name)
}

// containerRuntime is the runtime containerd records for container id on h
// (`ctr container info`): its name and the options the front end sent.
func containerRuntime(ctx context.Context, t *testing.T, h host, id string) (rt struct {
	Name    string
	Options json.RawMessage
}) {
	t.Helper()
	var info struct{ Runtime json.RawMessage }
	if err := json.Unmarshal([]byte(h.must(ctx, "container", "info", id)), &info); err != nil {
		t.Fatalf("ctr container info %s on %s: %v", id, h.name, err)
	}
	if err := json.Unmarshal(info.Runtime, &rt); err != nil {
		t.Fatalf("ctr container info %s on %s: runtime %s: %v", id, h.name, info.Runtime, err)
	}
	return rt
}

// dockerd is one lab host's Docker daemon: in the host's network namespace,
// on the host's containerd and containerd namespace (so that the lab's
// crash and down find its containers), with its data under the host's disk
// and state, and no iptables rules or bridge.
type dockerd struct {
	t    *testing.T
	l    *lab.Lab
	host string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited, with its error in exit
	exit error
}

func (d *dockerd) dataRoot() string { return filepath.Join(d.l.Root(d.host), "docker") }
func (d *dockerd) execRoot() string { return filepath.Join(d.l.State(d.host), "docker") }
func (d *dockerd) socket() string   { return filepath.Join(d.l.State(d.host), "docker.sock") }

// startDockerd starts h's dockerd and waits until it answers; at the end of
// the test it is stopped with its containers and networks (stop).
func startDockerd(ctx context.Context, t *testing.T, l *lab.Lab, h string) *dockerd {
	t.Helper()
	config, err := filepath.Abs("../../contrib/config/docker-daemon.json")
	if err != nil {
		t.Fatal(err)
	}
	d := &dockerd{t: t, l: l, host: h, done: make(chan struct{})}
	logf, err := os.Create(filepath.Join(l.State(h), "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command("nsenter", "--net="+l.Netns(h), "--", filepath.Join(dockerBin, "dockerd"),
		"--config-file", config,
		"--data-root", d.dataRoot(), "--exec-root", d.execRoot(),
		"--pidfile", filepath.Join(l.State(h), "dockerd.pid"), "-H", "unix://"+d.socket(),
		"--containerd", l.Address(h), "--containerd-namespace", l.Namespace(h),
		"--cgroup-parent", "/"+l.Namespace(h),
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--userland-proxy=false")
	d.cmd.Env = append(os.Environ(), "PATH="+dockerBin+":"+os.Getenv("PATH"))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start dockerd on %s: %v", h, err)
	}
	go func() { d.exit = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	if err := lab.WaitFor(30*time.Second, func() error {
		select {
		case <-d.done:
			return fmt.Errorf("dockerd exited: %v", d.exit)
		default:
		}
		_, err := d.docker(ctx, "version")
		return err
	}); err != nil {
		t.Fatalf("dockerd on %s: %v; log:\n%s", h, err, d.logTail())
	}
	return d
}

// stop removes what the test left in d (containers, networks), stops d and
// checks that it left no mount and no network namespace. A daemon that died
// with its host (lab crash) is only checked.
func (d *dockerd) stop() {
	t := d.t
	select {
	case <-d.done:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Not must: a cleanup goes on after an error, to stop the daemon.
		if out, err := d.docker(ctx, "ps", "-aq"); err != nil {
			t.Errorf("%v: %s", err, out)
		} else if ids := strings.Fields(out); len(ids) > 0 {
			if out, err := d.docker(ctx, append([]string{"rm", "-f"}, ids...)...); err != nil {
				t.Errorf("%v: %s", err, out)
			}
		}
		if out, err := d.docker(ctx, "network", "prune", "-f"); err != nil {
			t.Errorf("%v: %s", err, out)
		}
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("dockerd on %s: SIGTERM: %v", d.host, err)
		}
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Errorf("dockerd on %s still runs 30 s after SIGTERM; killed", d.host)
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	if t.Failed() {
		t.Logf("dockerd log of %s (tail):\n%s", d.host, d.logTail())
	}
	if left := mountsUnder(d.dataRoot(), d.execRoot()); len(left) > 0 {
		t.Errorf("dockerd on %s left mounts: %v", d.host, left)
	}
	// dockerd makes its plugin directory outside its roots.
	os.Remove("/run/docker/plugins")
	os.Remove("/run/docker")
}

// docker runs the docker client against d; the error carries the output.
func (d *dockerd) docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(dockerBin, "docker"), append([]string{"-H", "unix://" + d.socket()}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("docker %s on %s: %w", strings.Join(args, " "), d.host, err)
	}
	return out.String(), err
}

func (d *dockerd) must(ctx context.Context, args ...string) string {
	d.t.Helper()
	out, err := d.docker(ctx, args...)
	if err != nil {
		d.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func (d *dockerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.l.State(d.host), "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// mountsUnder lists the mount points under any of dirs.
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	var left []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				left = append(left, f[4])
			}
		}
	}
	return left
}

// exitCode is the exit status in err from exec, -1 if it has none.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// lineWith is the first line of s that contains sub, "" if none does.
func lineWith(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}
