// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

// background is a command left running for the test: its output so far,
// and a stop at cleanup.
type background struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

func (b *background) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

func startBackground(t *testing.T, cmd *exec.Cmd) *background {
	t.Helper()
	b := &background{}
	cmd.Stdout, cmd.Stderr = b, b
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Args[0], err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return b
}

// serveMetrics runs `rrcctl metrics` for host h (its shim configuration,
// hence its state_dir) on a free loopback port and returns the URL.
func serveMetrics(t *testing.T, l *lab.Lab, bin, dir, h string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "rrcctl"), "-config", filepath.Join(dir, h+".toml"), "metrics", "-listen", "127.0.0.1:0")
	out := startBackground(t, cmd)
	addr := regexp.MustCompile(`at (http://127\.0\.0\.1:[0-9]+/metrics)`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := addr.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("rrcctl metrics did not say where it serves:\n%s", out)
	return ""
}

// scrape reads url and returns the lines of the metrics whose names and
// labels contain every one of match.
func scrape(t *testing.T, url string, match ...string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s\n%s", url, resp.Status, body)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(body))
lines:
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, m := range match {
			if !strings.Contains(line, m) {
				continue lines
			}
		}
		out = append(out, line)
	}
	return out
}

// checkOperatorViews runs what an operator has on host b of a pair whose
// container id was just promoted there: the events seen, the metrics served,
// rrcctl describe and status -o json.
func checkOperatorViews(ctx context.Context, t *testing.T, rl replicationLab, id string, eventsA, eventsB *taskEvents, metricsB string) {
	t.Helper()
	l := rl.l
	for _, want := range []struct {
		ev    *taskEvents
		host  string
		topic string
	}{
		{eventsA, "a", "/rrc/replication/in-sync"},
		{eventsB, "b", "/rrc/replication/in-sync"},
		{eventsB, "b", "/rrc/failover/started"},
		{eventsB, "b", "/rrc/failover/done"},
	} {
		if !eventually(5*time.Second, func() bool { return want.ev.find(want.topic, id) != "" }) {
			t.Errorf("ctr events on %s shows no %s of %s:\n%s", want.host, want.topic, id, want.ev.all())
		}
	}
	if done := eventsB.find("/rrc/failover/done", id); !strings.Contains(done, `"total_ms"`) {
		t.Errorf("the failover-done event carries no figures: %s", done)
	} else {
		t.Logf("ctr events on b: %s", done)
	}

	label := `container="` + id + `"`
	if got := scrape(t, metricsB, "rrc_failovers_total{", label); len(got) != 1 || !strings.HasSuffix(got[0], " 1") {
		t.Errorf("metrics of b: rrc_failovers_total of %s: %q, want one series at 1", id, got)
	}
	if got := scrape(t, metricsB, "rrc_state{", label, `state="primary-after-failover"`); len(got) != 1 || !strings.HasSuffix(got[0], " 1") {
		t.Errorf("metrics of b: rrc_state of %s: %q", id, got)
	}
	restore := scrape(t, metricsB, "rrc_failover_phase_seconds{", label, `phase="restore"`)
	if len(restore) != 1 || strings.HasSuffix(restore[0], " 0") {
		t.Errorf("metrics of b: restore phase of %s: %q", id, restore)
	}

	bin, dir := rl.bin, rl.dir
	rrc := func(args ...string) string {
		all := append([]string{"-address", l.Address("b"), "-n", l.Namespace("b"), "-config", filepath.Join(dir, "b.toml")}, args...)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "rrcctl"), all...).CombinedOutput()
		if err != nil {
			t.Errorf("rrcctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	desc := rrc("describe", id)
	for _, want := range []string{"Replication:", "backup", "primary-after-failover", "Time in states:", "failover from epoch"} {
		if !strings.Contains(desc, want) {
			t.Errorf("rrcctl describe %s on b lacks %q:\n%s", id, want, desc)
		}
	}
	var views []struct {
		ID     string `json:"id"`
		Status *struct {
			Engine struct {
				State    string          `json:"state"`
				Failover json.RawMessage `json:"failover"`
			} `json:"engine"`
		} `json:"status"`
	}
	js := rrc("status", "-o", "json")
	if err := json.Unmarshal([]byte(js), &views); err != nil || len(views) != 1 || views[0].ID != id || views[0].Status == nil ||
		views[0].Status.Engine.State != "primary-after-failover" || len(views[0].Status.Engine.Failover) == 0 {
		t.Errorf("rrcctl status -o json on b (%v):\n%s", err, js)
	}
}

// find is the line of ctr events' output with topic about container id
// (a replication event is a ContainerUpdate: its id, and labels).
func (e *taskEvents) find(topic, id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, line := range e.lines {
		if strings.Contains(line, " "+topic+" ") && strings.Contains(line, `"id":"`+id+`"`) {
			return line
		}
	}
	return ""
}

func (e *taskEvents) all() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.lines, "\n")
}

func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
