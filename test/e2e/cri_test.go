// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
	"github.com/iorrc/rrc/test/prereq"
)

const (
	// crictlPath is where contrib/setup/frontends/30-crictl.sh installs crictl.
	crictlPath = "/opt/rrc/cri-tools/bin/crictl"
	// criNamespace is the containerd namespace of everything CRI makes.
	criNamespace = "k8s.io"
	// criHandler is the runtime of contrib/config/containerd-cri.toml, the
	// handler of contrib/config/runtimeclass.yaml.
	criHandler = "rrc"
)

// TestCRIFailover replicates a Redis pod through containerd's CRI plugin, as
// Kubernetes would run it: each host's containerd has the CRI runtime of
// contrib/config/containerd-cri.toml (handler "rrc", runtime_type io.rrc.v1,
// runc options from contrib/config/rrc-runc.toml), and crictl runs the pod
// with that handler on b (backup) and a (primary). CNI gives the pod the same
// address and MAC on both hosts (macvlan of the host's eth0, static IPAM).
// The io.rrc.* annotations are the pod's, as Kubernetes can only set them
// (CRI's pod_annotations give them to the sandbox and the container): the
// pod's sandbox (pause) runs through io.rrc.v1 unreplicated, the Redis
// container joins the pod's network namespace and is replicated in it
// (adopted). a crashes while a client
// talks to the pod address; the connection carries on with b's copy, which
// crictl then sees running and removes with its pod, leaving nothing.
func TestCRIFailover(t *testing.T) {
	prereq.Path(t, crictlPath, "crictl, installed by contrib/setup/frontends/30-crictl.sh (make setup)")
	for _, p := range []string{"macvlan", "static", "loopback"} {
		prereq.Path(t, "/opt/cni/bin/"+p, "CNI plugin, installed by contrib/setup/frontends/10-cni.sh (make setup)")
	}
	const name, subnet = "rrccri", "10.102.0"
	podIP := subnet + ".210"
	cfg := criContainerdConfig(t)
	t.Setenv("LAB_CRI", "1")
	t.Setenv("LAB_CONTAINERD_CONFIG", cfg)
	// Runs after lab down (cleanups run last first): the hosts' CNI
	// result caches must be gone with them, a's removed by its crash.
	var podIDs []string
	t.Cleanup(func() {
		for _, id := range podIDs {
			if m, _ := filepath.Glob("/var/lib/cni/results/*-" + id + "-*"); len(m) > 0 {
				t.Errorf("CNI cache of pod %s left after lab down: %v", id, m)
			}
		}
	})
	rl := startReplicationLab(t, name, subnet)
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, h := range []string{"a", "b"} {
		writeCNIConf(t, l, h, podIP)
	}
	a, b := criHost{t: t, lab: l, name: "a", dir: rl.dir}, criHost{t: t, lab: l, name: "b", dir: rl.dir}
	b.waitNetworkReady(ctx)
	a.waitNetworkReady(ctx)

	listen := l.IP("b") + ":7100"
	podB, ctrB := b.runPod(ctx, "io.rrc.role", "backup", "io.rrc.listen", listen, "io.rrc.peer-name", l.IP("a"))
	podIDs = append(podIDs, podB)
	if st := b.containerState(ctx, ctrB); st != "CONTAINER_RUNNING" {
		t.Fatalf("backup's standby container: %s, want CONTAINER_RUNNING", st)
	}
	podA, ctrA := a.runPod(ctx, "io.rrc.role", "primary", "io.rrc.peer", listen)
	podIDs = append(podIDs, podA)
	inSync := isState(replication.StateInSync)
	waitStatusIn(t, l, "a", criNamespace, ctrA, "primary in sync", 30*time.Second, inSync)
	waitStatusIn(t, l, "b", criNamespace, ctrB, "backup in sync", 10*time.Second, inSync)
	// The pause containers carry the pod's annotations too and run
	// unreplicated: no status file, and rrcctl says why.
	for _, s := range []struct{ h, pod, ctr string }{{"a", podA, ctrA}, {"b", podB, ctrB}} {
		out := rrcctlIn(t, l, rl.bin, rl.dir, s.h, criNamespace)
		t.Logf("rrcctl -n %s status on %s:\n%s", criNamespace, s.h, out)
		if !rrcctlSays(out, s.ctr, "in-sync") || !lineHas(out, s.pod, "unreplicated (pod sandbox)") {
			t.Errorf("rrcctl status on %s: want %s in-sync and the sandbox %s unreplicated (pod sandbox):\n%s", s.h, s.ctr, s.pod, out)
		}
		if _, err := os.Stat(status.File(l.State(s.h)+"/rrc", criNamespace, s.pod)); !os.IsNotExist(err) {
			t.Errorf("%s: the pod sandbox %s has a replication status file (%v)", s.h, s.pod, err)
		}
	}

	cl := redisClient(ctx, t, l, podIP+":6379", 20)
	failOverLogged(ctx, t, l, criNamespace, ctrB, cl)

	// CRI sees the restored container as the pod's running container.
	if st := b.containerState(ctx, ctrB); st != "CONTAINER_RUNNING" {
		t.Errorf("crictl inspect on b after the failover: %s, want CONTAINER_RUNNING", st)
	}
	if out := b.must(ctx, "ps", "--pod", podB, "--state", "Running", "-q"); !strings.Contains(out, ctrB) {
		t.Errorf("crictl ps on b after the failover does not list %s running:\n%s", ctrB, out)
	}
	if out := b.must(ctx, "exec", ctrB, "redis-cli", "ping"); strings.TrimSpace(out) != "PONG" {
		t.Errorf("crictl exec redis-cli ping in the restored container: %q", out)
	}
	b.must(ctx, "stopp", podB)
	b.must(ctx, "rmp", podB)
	if out := b.must(ctx, "pods", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("crictl pods on b after rmp: %q", out)
	}
	nothingLeftIn(t, l, "b", criNamespace, ctrB)
	criNothingLeft(t, l, "b", podB)
}

// TestRuntimeClassNamesTheCRIHandler: the RuntimeClass users apply
// (contrib/config/runtimeclass.yaml) names the handler the containerd
// configuration they copy defines and TestCRIFailover runs pods with.
func TestRuntimeClassNamesTheCRIHandler(t *testing.T) {
	contrib := filepath.Join("..", "..", "contrib", "config")
	rc, err := os.ReadFile(filepath.Join(contrib, "runtimeclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^handler:\s*(\S+)\s*$`).FindSubmatch(rc)
	if m == nil || string(m[1]) != criHandler {
		t.Fatalf("runtimeclass.yaml: handler %q, want %q", m, criHandler)
	}
	if !regexp.MustCompile(`(?m)^kind:\s*RuntimeClass\s*$`).Match(rc) {
		t.Error("runtimeclass.yaml is not a RuntimeClass")
	}
	cfg, err := os.ReadFile(filepath.Join(contrib, "containerd-cri.toml"))
	if err != nil {
		t.Fatal(err)
	}
	runtime := `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.` + criHandler + `]`
	if !bytes.Contains(cfg, []byte(runtime)) || !bytes.Contains(cfg, []byte(`runtime_type = "io.rrc.v1"`)) {
		t.Errorf("containerd-cri.toml does not define %s with runtime_type io.rrc.v1", runtime)
	}
}

// criContainerdConfig is the TOML appended to each lab host's containerd
// config: contrib/config/containerd-cri.toml as users copy it, with only
// the path of its runc options file pointed at contrib/config/rrc-runc.toml.
func criContainerdConfig(t *testing.T) string {
	t.Helper()
	contrib := filepath.Join("..", "..", "contrib", "config")
	b, err := os.ReadFile(filepath.Join(contrib, "containerd-cri.toml"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := filepath.Abs(filepath.Join(contrib, "rrc-runc.toml"))
	if err != nil {
		t.Fatal(err)
	}
	const userPath = "/etc/containerd/rrc-runc.toml"
	if !bytes.Contains(b, []byte(userPath)) {
		t.Fatalf("contrib/config/containerd-cri.toml no longer names %s", userPath)
	}
	file := filepath.Join(t.TempDir(), "containerd-cri.toml")
	writeFile(t, file, strings.ReplaceAll(string(b), userPath, opts))
	return file
}

// writeCNIConf gives lab host h the pod network: a macvlan of the host's
// eth0 with the same address (static IPAM, one address) and the same MAC
// on both hosts, so that b's copy of the pod answers exactly as a's did.
// The backup's shim keeps b's copy down until the failover.
func writeCNIConf(t *testing.T, l *lab.Lab, h, ip string) {
	t.Helper()
	var o [4]int
	if _, err := fmt.Sscanf(ip, "%d.%d.%d.%d", &o[0], &o[1], &o[2], &o[3]); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rrc-pod",
  "plugins": [{
    "type": "macvlan", "master": "eth0", "mode": "bridge", "mac": "0a:00:%02x:%02x:%02x:%02x",
    "ipam": {"type": "static", "addresses": [{"address": "%s/24"}], "routes": [{"dst": "0.0.0.0/0", "gw": "%s.254"}]}
  }]
}
`, o[0], o[1], o[2], o[3], ip, l.Subnet)
	dir := l.Root(h) + "/cni/net.d"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "10-rrc-pod.conflist"), conf)
}

// criHost is one lab host's containerd, seen through crictl.
type criHost struct {
	t         *testing.T
	lab       *lab.Lab
	name, dir string
}

// crictl runs crictl against the host's containerd, in the host's network
// namespace; it returns stdout, stderr and the error.
func (h criHost) crictl(ctx context.Context, args ...string) (string, string, error) {
	h.t.Helper()
	sock := "unix://" + h.lab.Address(h.name)
	cfg := filepath.Join(h.dir, "crictl-"+h.name+".yaml")
	if _, err := os.Stat(cfg); err != nil {
		writeFile(h.t, cfg, fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n", sock, sock))
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.lab.Netns(h.name), "--", crictlPath, "--config", cfg}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// must runs crictl and fails the test unless it succeeds.
func (h criHost) must(ctx context.Context, args ...string) string {
	h.t.Helper()
	out, errOut, err := h.crictl(ctx, args...)
	if err != nil {
		h.t.Fatalf("crictl %s on %s: %v: %s%s", strings.Join(args, " "), h.name, err, out, errOut)
	}
	return out
}

// waitNetworkReady waits until CRI has loaded the host's CNI configuration.
func (h criHost) waitNetworkReady(ctx context.Context) {
	h.t.Helper()
	err := lab.WaitFor(20*time.Second, func() error {
		out, errOut, err := h.crictl(ctx, "info")
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		var info struct {
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status bool   `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			return err
		}
		for _, c := range info.Status.Conditions {
			if c.Type == "NetworkReady" && c.Status {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", info.Status.Conditions)
	})
	if err != nil {
		h.t.Fatalf("CRI network of %s not ready: %v", h.name, err)
	}
}

// runPod runs the Redis pod on the host with the rrc handler (crictl runp
// --runtime rrc) and the io.rrc.* annotations kv (key, value, ...) and the
// pair name "redis" (CRI's container IDs differ between the hosts), then
// creates and starts its Redis container. It returns the pod's and the
// container's IDs.
func (h criHost) runPod(ctx context.Context, kv ...string) (pod, ctr string) {
	h.t.Helper()
	ann := map[string]string{"io.rrc.pair": "redis"}
	for i := 0; i+1 < len(kv); i += 2 {
		ann[kv[i]] = kv[i+1]
	}
	// Namespace modes: 0 POD, 1 CONTAINER. Kubernetes' defaults: network
	// and IPC of the pod, a PID namespace of the container's own.
	nsOpts := map[string]int{"network": 0, "ipc": 0, "pid": 1}
	podCfg := map[string]any{
		"metadata":      map[string]any{"name": "redis", "namespace": "default", "uid": "redis-" + h.name},
		"annotations":   ann,
		"log_directory": h.lab.Root(h.name) + "/pods/redis",
		"linux": map[string]any{
			// Under the host's cgroup, where lab crash and down find it.
			"cgroup_parent":    "/" + h.lab.Namespace(h.name) + "/pod-redis",
			"security_context": map[string]any{"namespace_options": nsOpts},
		},
	}
	ctrCfg := map[string]any{
		"metadata": map[string]any{"name": "redis"},
		"image":    map[string]any{"image": redis},
		"log_path": "redis.log",
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": nsOpts,
			// The gate sits in the pod's namespace: no way around it.
			"capabilities": map[string]any{"drop_capabilities": []string{"NET_RAW", "NET_ADMIN"}},
		}},
	}
	podFile, ctrFile := filepath.Join(h.dir, "pod-"+h.name+".json"), filepath.Join(h.dir, "redis-"+h.name+".json")
	for file, v := range map[string]any{podFile: podCfg, ctrFile: ctrCfg} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			h.t.Fatal(err)
		}
		writeFile(h.t, file, string(b))
	}
	pod = strings.TrimSpace(h.must(ctx, "runp", "--runtime", criHandler, podFile))
	ctr = strings.TrimSpace(h.must(ctx, "create", pod, ctrFile, podFile))
	h.must(ctx, "start", ctr)
	h.t.Logf("%s: pod %s, container %s", h.name, pod, ctr)
	return pod, ctr
}

// containerState is the state crictl inspect reports for container id.
func (h criHost) containerState(ctx context.Context, id string) string {
	h.t.Helper()
	var v struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(h.must(ctx, "inspect", id)), &v); err != nil {
		h.t.Fatalf("crictl inspect %s: %v", id, err)
	}
	return v.Status.State
}

// criNothingLeft checks that host h keeps nothing of the removed pod: its
// shim, runc state, network namespace and mounts under CRI's state dir,
// CNI's cache.
func criNothingLeft(t *testing.T, l *lab.Lab, h, pod string) {
	t.Helper()
	if err := lab.WaitFor(5*time.Second, func() error { return shimGone(criNamespace, pod) }); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat("/run/containerd/runc/" + criNamespace + "/" + pod); !os.IsNotExist(err) {
		t.Errorf("%s: runc state of pod %s left (%v)", h, pod, err)
	}
	criState := l.State(h) + "/io.containerd.grpc.v1.cri"
	if ents, _ := os.ReadDir(criState + "/netns"); len(ents) > 0 {
		t.Errorf("%s: pod network namespaces left in %s/netns: %d", h, criState, len(ents))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, criState+"/") || strings.Contains(line, pod) {
				t.Errorf("%s: mount left after rmp: %s", h, line)
			}
		}
	}
	if m, _ := filepath.Glob("/var/lib/cni/results/*-" + pod + "-*"); len(m) > 0 {
		t.Errorf("%s: CNI cache of pod %s left after rmp: %v", h, pod, m)
	}
}

// lineHas: out has a line that starts with id and contains s.
func lineHas(out, id, s string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, id+" ") && strings.Contains(line, s) {
			return true
		}
	}
	return false
}
