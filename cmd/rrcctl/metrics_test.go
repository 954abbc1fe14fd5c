// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
)

// TestMetricsServiceUnit runs the command line of the systemd unit users
// install (contrib/systemd/rrc-metrics.service) with rrcctl built from this
// tree: it serves the host's status files at the configured
// metrics_address and ends cleanly on SIGTERM.
func TestMetricsServiceUnit(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/systemd/rrc-metrics.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindSubmatch(unit)
	if m == nil || filepath.Base(string(m[1])) != "rrcctl" {
		t.Fatalf("the unit's ExecStart does not run rrcctl:\n%s", unit)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "rrcctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build rrcctl: %v\n%s", err, out)
	}
	stateDir := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "shim.toml")
	if err := os.WriteFile(conf, []byte("state_dir = \""+stateDir+"\"\nmetrics_address = \"127.0.0.1:0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := status.Published{ID: "web", Namespace: "default", UpdatedAt: time.Now(),
		Engine: replication.Status{Pair: "web", Role: replication.RoleBackup, State: replication.StateInSync, CommittedEpoch: 5}}
	b, _ := json.Marshal(st)
	p := status.File(stateDir, "default", "web")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, strings.Fields(string(m[2]))...)
	cmd.Env = append(os.Environ(), "RRC_SHIM_CONFIG="+conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() {
		t.Fatalf("rrcctl metrics said nothing: %v", cmd.Wait())
	}
	url := regexp.MustCompile(`http://\S+/metrics`).FindString(sc.Text())
	if url == "" {
		t.Fatalf("rrcctl metrics: %q", sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `rrc_state{container="web",mode="",namespace="default",pair="web",role="backup",state="in-sync"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("GET %s lacks %s:\n%s", url, want, body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("rrcctl metrics after SIGTERM: %v", err)
	}
}
