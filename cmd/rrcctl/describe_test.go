// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/prereq"
)

func TestDescribeText(t *testing.T) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	primary, err := settings.ParseAnnotations("web", map[string]string{
		"io.rrc.role": "primary", "io.rrc.peer": "10.0.0.12:7100", "io.rrc.mode": "hybrid", "io.rrc.service-ip": "10.0.0.200/24", "io.rrc.service-link": "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	backup, err := settings.ParseAnnotations("web", map[string]string{
		"io.rrc.role": "backup", "io.rrc.listen": "10.0.0.12:7100", "io.rrc.peer-name": "10.0.0.11"})
	if err != nil {
		t.Fatal(err)
	}
	pc, bc := primary.WithDefaults(), backup.WithDefaults()
	tests := []struct {
		name string
		v    containerView
		want []string
		not  []string
	}{
		{"primary in sync", containerView{ID: "web", Task: "RUNNING", Pid: 42, Replication: "primary", Config: &pc, Settings: settingsOf(pc),
			Status: &status.Published{UpdatedAt: now.Add(-time.Second), ShimPid: 7, Engine: replication.Status{Role: replication.RolePrimary, Mode: replication.ModeHybrid,
				State: replication.StateInSync, StateSince: now.Add(-90 * time.Second), CommittedEpoch: 12, LagMS: 80, Epochs: 12,
				StateSeconds: map[replication.State]float64{replication.StateInSync: 90, replication.StateSyncing: 0.5}}}},
			[]string{"Task:", "RUNNING, pid 42", "peer", "10.0.0.12:7100", "mode", "hybrid", "10.0.0.200/24 on eth0, MAC derived", "in-sync since", "(1m30s)",
				"Time in states:", "in-sync 1m30s, syncing 500ms", "epoch 12, lag 80ms", "by shim pid 7", "web: 12 epochs"},
			[]string{"Failover"}},
		{"backup waiting", containerView{ID: "web", Task: "RUNNING", Replication: "backup", Config: &bc, Settings: settingsOf(bc),
			Status: &status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StateInSync}}},
			[]string{"listen", "10.0.0.12:7100", "peer name (TLS)", "10.0.0.11", "the network namespace the spec names", "Failover:", "none yet"}, nil},
		{"invalid annotations", containerView{ID: "x", Task: "-", Replication: "invalid annotations", ReplicationError: "annotation io.rrc.role=\"boss\": unknown"},
			[]string{"Replication:", "invalid annotations", "Why:", "boss"}, []string{"State:"}},
		{"status file missing", containerView{ID: "x", Task: "STOPPED", Replication: "primary", Config: &pc, Settings: settingsOf(pc), StatusError: "no status file"},
			[]string{"State:", "unknown (no status file)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := describeText(&b, tc.v, now); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("has %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestStatusTable(t *testing.T) {
	var b bytes.Buffer
	if err := printStatusTable(&b, nil); err != nil || !strings.Contains(b.String(), "no container runs through io.rrc.v1") {
		t.Errorf("empty table (%v):\n%s", err, b.String())
	}
	b.Reset()
	backup := replication.Config{Role: replication.RoleBackup, Pair: "r1", Listen: "10.0.0.2:7100", Mode: replication.ModeEpoch}
	views := []containerView{
		{ID: "plain", Task: "RUNNING", Pid: 3, Replication: "unreplicated"},
		{ID: "bad", Task: "CREATED", Replication: "invalid annotations", ReplicationError: "annotation io.rrc.epoch=\"x\": not a duration"},
		{ID: "standby", Task: "RUNNING", Pid: 4, Replication: "backup", Config: &backup,
			Status: &status.Published{Engine: replication.Status{Role: replication.RoleBackup, State: replication.StateInSync}}},
		{ID: "protected", Task: "RUNNING", Pid: 5, Replication: "backup", Config: &backup,
			Status: &status.Published{Engine: replication.Status{Role: replication.RolePrimary, Peer: "10.0.0.1:7101", State: replication.StateInSync}}},
	}
	if err := printStatusTable(&b, views); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"plain", "unreplicated", "bad: annotation io.rrc.epoch=\"x\": not a duration",
		"listens on 10.0.0.2:7100", "primary (protected after a failover)  10.0.0.1:7101"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}

// TestCompletionScript: the script is valid bash and completes the commands.
func TestCompletionScript(t *testing.T) {
	var b bytes.Buffer
	if err := completionCmd([]string{"bash"}, &b); err != nil {
		t.Fatal(err)
	}
	if err := completionCmd([]string{"zsh"}, &b); err == nil {
		t.Error("completion zsh: no error")
	}
	prereq.Commands(t, "bash") // under CI a missing bash fails
	bash, _ := prereq.LookPath("bash")
	script := filepath.Join(t.TempDir(), "rrcctl.bash")
	if err := os.WriteFile(script, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, "-c", `source "$0"; COMP_WORDS=(rrcctl -n default de); COMP_CWORD=3; _rrcctl; echo "${COMPREPLY[@]}"
COMP_WORDS=(rrcctl status -); COMP_CWORD=2; _rrcctl; echo "${COMPREPLY[@]}"`, script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 2 || lines[0] != "describe" || lines[1] != "-w -interval -o" {
		t.Errorf("completions %q", lines)
	}
}
