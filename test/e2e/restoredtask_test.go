package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// TestRestoredTaskThroughContainerd: after a failover the restored
// container is a runc task like one started by io.containerd.runc.v2:
// exec (redis-cli ping answers PONG), ps, pause and resume (the client's
// connection waits, then goes on), metrics, update (a memory limit, which
// an exec then outgrows: an OOM event), kill with a wait that returns its
// status; containerd sees no second create or start of the task and
// exactly one exit, and a delete leaves nothing behind.
func TestRestoredTaskThroughContainerd(t *testing.T) {
	rl := startReplicationLab(t, "rttask", "10.91.7")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := host{t: t, lab: l, name: "b"}
	const id = "rt1"
	serviceIP := l.Subnet + ".200"
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: serviceIP, listen: l.IP("b") + ":7100"})

	// Every task event b's containerd publishes from here on.
	evs := watchEvents(ctx, t, l, "b")
	cl := redisClient(ctx, t, l, serviceIP+":6379", 20)
	after := failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	f := after.Engine.Failover
	t.Logf("failover: restored epoch %d; detection %.1f ms, restore %.1f ms, network %.1f ms, total %.1f ms",
		f.Epoch, f.DetectionMS, f.RestoreMS, f.NetworkMS, f.TotalMS)
	if st := b.taskStatus(ctx, id); st != "RUNNING" {
		t.Fatalf("restored task %q, want RUNNING", st)
	}

	// exec: ctr now and then loses the output of a short exec (also with
	// runc.v2): ask again before calling it a failure.
	var pong string
	for try := 0; try < 3 && pong != "PONG"; try++ {
		pong = strings.TrimSpace(b.must(ctx, "task", "exec", "--exec-id", fmt.Sprintf("ping%d", try), id, "redis-cli", "ping"))
	}
	if pong != "PONG" {
		t.Errorf("redis-cli ping in the restored container: %q, want PONG", pong)
	}

	// ps lists the restored init (and nothing of the placeholder).
	ps := b.must(ctx, "task", "ps", id)
	if !psHas(ps, rc.Pid) {
		t.Errorf("ctr task ps %s does not list the restored init %d:\n%s", id, rc.Pid, ps)
	}

	// pause: the client waits; resume: it goes on on the same connection.
	b.must(ctx, "task", "pause", id)
	if st := b.taskStatus(ctx, id); st != "PAUSED" {
		t.Errorf("after ctr task pause: %q, want PAUSED", st)
	}
	replied := make(chan error, 1)
	go func() { replied <- cl.Run(ctx, 1) }()
	select {
	case err := <-replied:
		t.Errorf("the paused container answered (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	b.must(ctx, "task", "resume", id)
	if err := <-replied; err != nil {
		t.Errorf("the client after resume: %v", err)
	}
	if st := b.taskStatus(ctx, id); st != "RUNNING" {
		t.Errorf("after ctr task resume: %q, want RUNNING", st)
	}
	if err := cl.Run(ctx, 5); err != nil {
		t.Errorf("after resume: %v", err)
	}
	if err := cl.Verify(); err != nil {
		t.Error(err)
	}

	// metrics come from the restored container's cgroup.
	m := b.must(ctx, "task", "metrics", id)
	if !strings.Contains(m, "memory") || !strings.Contains(m, id) {
		t.Errorf("ctr task metrics %s:\n%s", id, m)
	}

	// update sets the restored container's memory limit; an exec that
	// outgrows it is killed by the kernel, which the OOM watch reports.
	const limit = 256 << 20
	updateMemoryLimit(ctx, t, l, "b", id, limit)
	if m := b.must(ctx, "task", "metrics", id); !metricIs(m, "memory.limit_in_bytes", limit) {
		t.Errorf("after ctr task update --memory-limit %d:\n%s", limit, m)
	}
	if _, _, code := b.ctr(ctx, "", "task", "exec", "--exec-id", "hog", id, "sh", "-c", "a=0123456789; while :; do a=$a$a; done"); code != 128+9 {
		t.Errorf("an exec outgrowing the memory limit: exit %d, want %d (killed)", code, 128+9)
	}
	if err := cl.Run(ctx, 3); err != nil {
		t.Errorf("Redis after the exec's OOM kill: %v", err)
	}

	// A wait begun before the kill (containerd's client: ctr has no task
	// wait) returns the task's exit status.
	c, task := loadTask(ctx, t, l, "b", id)
	defer c.Close()
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	code := b.killAndDelete(ctx, id, "TERM")
	if code != 0 && code != 128+15 {
		t.Errorf("exit status of the restored Redis stopped with TERM: %d", code)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != uint32(code) || st.Error() != nil {
			t.Errorf("the wait returned status %d (%v), the task's exit status is %d", st.ExitCode(), st.Error(), code)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the wait begun before the kill did not return")
	}
	nothingLeft(t, l, "b", id)
	if st := filepath.Join("/run/containerd/runc", l.Namespace("b"), id); dirExists(st) {
		t.Errorf("runc state %s left after delete", st)
	}

	// What containerd was told: no second create or start of the task,
	// one exit.
	time.Sleep(200 * time.Millisecond) // the delete's events on their way
	got := evs.of(id)
	t.Logf("task events on b since the pair was in sync: %v", got)
	count := map[string]int{}
	for _, e := range got {
		count[e]++
	}
	if count["/tasks/create"] != 0 || count["/tasks/start"] != 0 {
		t.Errorf("containerd was told the task was created or started again: %v", got)
	}
	if count["/tasks/exit"] != 1 || count["/tasks/delete"] != 1 {
		t.Errorf("task exits %d and deletes %d, want 1 each: %v", count["/tasks/exit"], count["/tasks/delete"], got)
	}
	if count["/tasks/paused"] != 1 || count["/tasks/resumed"] != 1 {
		t.Errorf("pause and resume events: %v", got)
	}
	if count["/tasks/oom"] == 0 {
		t.Errorf("no OOM event for the exec killed at the memory limit: %v", got)
	}
}

// loadTask is task id of host h through containerd's client; close the
// client when done.
func loadTask(ctx context.Context, t *testing.T, l *lab.Lab, h, id string) (*containerd.Client, containerd.Task) {
	t.Helper()
	c, err := containerd.New(l.Address(h), containerd.WithDefaultNamespace(l.Namespace(h)))
	if err != nil {
		t.Fatalf("containerd client of %s: %v", h, err)
	}
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		c.Close()
		t.Fatalf("container %s on %s: %v", id, h, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		c.Close()
		t.Fatalf("task %s on %s: %v", id, h, err)
	}
	return c, task
}

// updateMemoryLimit sets the memory limit of task id on host h (the Update
// task call; ctr has no task update).
func updateMemoryLimit(ctx context.Context, t *testing.T, l *lab.Lab, h, id string, limit int64) {
	t.Helper()
	c, task := loadTask(ctx, t, l, h, id)
	defer c.Close()
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Fatalf("update the memory limit of %s on %s: %v", id, h, err)
	}
}

// metricIs: `ctr task metrics` shows name with value.
func metricIs(out, name string, value int) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name && f[1] == fmt.Sprint(value) {
			return true
		}
	}
	return false
}

// psHas: `ctr task ps` lists pid.
func psHas(out string, pid int) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == fmt.Sprint(pid) {
			return true
		}
	}
	return false
}

// running: pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold blanks and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// taskEvents are the task events of a host's containerd, from `ctr events`.
type taskEvents struct {
	mu    sync.Mutex
	lines []string
}

// watchEvents runs `ctr events` on host h until ctx ends.
func watchEvents(ctx context.Context, t *testing.T, l *lab.Lab, h string) *taskEvents {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ctr", l.CtrArgs(h, "events")...)
	cmd.Env = l.Env()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("ctr events on %s: %v", h, err)
	}
	evs := &taskEvents{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			evs.mu.Lock()
			evs.lines = append(evs.lines, sc.Text())
			evs.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	time.Sleep(200 * time.Millisecond) // subscribed
	return evs
}

// of returns the topics of the /tasks/ events of container id, in order;
// an exec's exit is "/tasks/exit (exec)".
func (e *taskEvents) of(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var topics []string
	for _, line := range e.lines {
		// timestamp (with blanks) namespace topic {json}
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/tasks/") {
				if strings.Contains(line, `"container_id":"`+id+`"`) {
					if f == "/tasks/exit" && !strings.Contains(line, `"id":"`+id+`"`) {
						f += " (exec)" // an exec's, not the task's
					}
					topics = append(topics, f)
				}
				break
			}
		}
	}
	return topics
}

// TestRestoredTaskDeadShim: the shim of a promoted backup dies (SIGKILL);
// containerd runs `containerd-shim-rrc-v1 delete`, which must remove the
// restored container (the runc manager's cleanup: runc delete, rootfs)
// and what replication made for it, as for a dead primary's shim.
func TestRestoredTaskDeadShim(t *testing.T) {
	rl := startReplicationLab(t, "rtdead", "10.92.8")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := host{t: t, lab: l, name: "b"}
	const id = "rt2"
	serviceIP := l.Subnet + ".200"
	rl.startPair(ctx, t, pairSpec{id: id, image: redis, serviceIP: serviceIP, listen: l.IP("b") + ":7100"})
	cl := redisClient(ctx, t, l, serviceIP+":6379", 10)
	after := failOverLogged(ctx, t, l, l.Namespace("b"), id, cl)
	rc := after.Engine.Restored
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("no restored container in the status: %+v", after.Engine)
	}
	shimPid := findShim(l.Namespace("b"), id)
	if shimPid == 0 {
		t.Fatal("no shim of the promoted backup")
	}
	if err := unix.Kill(shimPid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	runcState := filepath.Join("/run/containerd/runc", l.Namespace("b"), id)
	if err := lab.WaitFor(15*time.Second, func() error {
		if running(rc.Pid) {
			return fmt.Errorf("the restored init %d still runs", rc.Pid)
		}
		if dirExists(runcState) {
			return fmt.Errorf("runc state %s still there", runcState)
		}
		if st := b.taskStatus(ctx, id); st != "" && st != "STOPPED" {
			return fmt.Errorf("task %s", st)
		}
		// The dead shim's delete removes the status file last, after the
		// runc manager's clean-up the conditions above see.
		if _, err := os.Stat(status.File(l.State("b")+"/rrc", l.Namespace("b"), id)); !os.IsNotExist(err) {
			return fmt.Errorf("the dead shim's delete has not finished (status file: %v)", err)
		}
		return nil
	}); err != nil {
		t.Fatalf("after the promoted backup's shim was killed: %v", err)
	}
	b.cleanup(id)
	nothingLeft(t, l, "b", id)
}
