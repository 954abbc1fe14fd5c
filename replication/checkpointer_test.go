// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/criu"
)

// newFakeCheckpointer makes a real criu.Checkpointer on a fake runc
// state, a fake cgroup v1 freezer and a fake CRIU: this test binary, which
// TestMain turns into `criu swrk 3` when RRC_FAKE_CRIU_REPL is set
// (fakeCRIUMain); freezerState reads the fake cgroup's state.
func newFakeCheckpointer(t *testing.T, mode string, startMS int) (ck *criu.Checkpointer, freezerState func() string) {
	t.Helper()
	t.Setenv("RRC_FAKE_CRIU_REPL", mode)
	t.Setenv("RRC_FAKE_CRIU_START_MS", strconv.Itoa(startMS))
	cg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cg, "freezer.state"), []byte("THAWED\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	st, _ := json.Marshal(criu.RuncState{ID: "c1", InitPid: os.Getpid(),
		CgroupPaths: map[string]string{"freezer": cg}, Config: criu.RuncConfig{Rootfs: "/"}})
	if err := os.MkdirAll(filepath.Join(root, "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(criu.RuncStatePath(root, "c1"), st, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := criu.NewCheckpointer(context.Background(), criu.CheckpointerConfig{
		RuncRoot: root, ID: "c1",
		CRIU: criu.CRIUCommand{Argv: []string{os.Args[0]}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() string {
		b, _ := os.ReadFile(filepath.Join(cg, "freezer.state"))
		return strings.TrimSpace(string(b))
	}
}

// Fakes recording the freezer state each call sees.
type cgHold struct {
	rec   *recorder
	state func() string
	fakeHold
}

func (h cgHold) Hold() error    { h.rec.add("hold@%s", h.state()); return nil }
func (h cgHold) Release() error { h.rec.add("release-input@%s", h.state()); return nil }

type cgPackets struct {
	rec    *recorder
	state  func() string
	failed chan error
}

func (p *cgPackets) Open(context.Context, PacketHooks) (OutputGate, InputHold, error) {
	return &fakeGate{rec: p.rec, state: p.state}, cgHold{rec: p.rec, state: p.state}, nil
}
func (p *cgPackets) Failed() <-chan error        { return p.failed }
func (p *cgPackets) Close(context.Context) error { return nil }

// TestCheckpointerHooks drives the epoch loop with a real
// criu.Checkpointer (fake CRIU, fake freezer): input is held only
// from just before the freeze (after CRIU's start-up) to the thaw, the gate
// is sealed while frozen, and the failure paths thaw, release the input and
// never release output.
func TestCheckpointerHooks(t *testing.T) {
	tests := []struct {
		name  string
		mode  string
		want  []string // in order
		never []string
		sends bool
	}{
		{name: "dump succeeds", mode: "ok",
			want:  []string{"hold@THAWED", "seal:1@FROZEN", "release-input@THAWED", "send:1", "ack:1", "release-output:1"},
			sends: true},
		{name: "criu fails while frozen", mode: "fail-after",
			want:  []string{"hold@THAWED", "seal:1@FROZEN", "release-input@THAWED"},
			never: []string{"send:1", "release-output:1", "release-all"}},
		{name: "criu fails before the freeze", mode: "fail-before",
			never: []string{"hold@THAWED", "seal:1@FROZEN", "release-input@THAWED", "send:1", "release-output:1", "release-all"}},
	}
	const startMS = 150 // CRIU's start-up: input must not be held during it
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck, state := newFakeCheckpointer(t, tt.mode, startMS)
			rec := newRecorder()
			pk := &cgPackets{rec: rec, state: state, failed: make(chan error, 1)}
			snd := &fakeSender{rec: rec}
			p := startTestPrimary(t, time.Minute, pk, ck, snd)
			if tt.sends {
				rec.waitFor(t, "send:1")
				snd.ack(1, nil)
				rec.waitFor(t, "release-output:1")
			} else {
				deadline := time.Now().Add(5 * time.Second)
				for p.Status().FailedEpochs == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(20 * time.Millisecond)
			}
			got := rec.list()
			i := 0
			for _, e := range got {
				if i < len(tt.want) && e == tt.want[i] {
					i++
				}
			}
			if i < len(tt.want) {
				t.Errorf("events %v lack %v in this order", got, tt.want)
			}
			for _, e := range tt.never {
				if slices.Contains(got, e) {
					t.Errorf("events %v contain %q", got, e)
				}
			}
			if s := state(); s != "THAWED" {
				t.Errorf("container left %s", s)
			}
			st := p.Status()
			if tt.mode != "fail-before" && (st.InputHoldMS.N != 1 || st.InputHoldMS.Max >= startMS) {
				t.Errorf("input hold %+v: want one hold, shorter than CRIU's %d ms start-up", st.InputHoldMS, startMS)
			}
		})
	}
}
