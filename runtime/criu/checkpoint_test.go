// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckpointHooks checks the order of CheckpointHooks and the freezer
// state each hook sees, with a fake `criu swrk` and a fake v1 freezer
// cgroup, including the failure paths.
func TestCheckpointHooks(t *testing.T) {
	tests := []struct {
		name       string
		mode       string // RRC_FAKE_CRIU_MODE
		badFreezer bool   // the freeze fails
		want       string // hooks called, with the freezer state they saw
		wantErr    string
	}{
		{name: "dump succeeds", want: "before:THAWED,frozen:FROZEN,thawed:THAWED"},
		{name: "criu fails before pre-dump", mode: "fail-before", want: "", wantErr: "criu DUMP failed"},
		{name: "criu fails while frozen", mode: "fail-after", want: "before:THAWED,frozen:FROZEN,thawed:THAWED", wantErr: "criu DUMP failed"},
		{name: "freeze fails", badFreezer: true, want: "before:-,thawed:-", wantErr: "freeze"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("RRC_FAKE_CRIU", "1")
			t.Setenv("RRC_FAKE_CRIU_MODE", tt.mode)
			cg := fakeCgroup(t, false)
			if tt.badFreezer {
				cg = filepath.Join(cg, "missing")
			}
			c := fakeCRIUCheckpointer(t, cg)
			var calls []string
			state := func() string {
				b, err := os.ReadFile(filepath.Join(cg, "freezer.state"))
				if err != nil {
					return "-"
				}
				return strings.TrimSpace(string(b))
			}
			hooks := CheckpointHooks{
				BeforeFreeze: func() { calls = append(calls, "before:"+state()) },
				Frozen:       func() { calls = append(calls, "frozen:"+state()) },
				Thawed:       func() { calls = append(calls, "thawed:"+state()) },
			}
			_, err := c.CheckpointWithHooks(context.Background(), filepath.Join(t.TempDir(), "img"), hooks)
			if got := strings.Join(calls, ","); got != tt.want {
				t.Errorf("hooks = %q, want %q", got, tt.want)
			}
			if tt.wantErr == "" && err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("checkpoint error = %v, want one containing %q", err, tt.wantErr)
			}
			if !tt.badFreezer && state() != "THAWED" {
				t.Errorf("container left %s", state())
			}
		})
	}
	// Plain Checkpoint (no hooks) still works.
	t.Run("no hooks", func(t *testing.T) {
		t.Setenv("RRC_FAKE_CRIU", "1")
		cg := fakeCgroup(t, false)
		c := fakeCRIUCheckpointer(t, cg)
		if _, err := c.Checkpoint(context.Background(), filepath.Join(t.TempDir(), "img")); err != nil {
			t.Fatal(err)
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeCRIUCheckpointer is a Checkpointer of this process on the fake v1
// freezer cgroup cg, its CRIU the fake swrk (fakeCRIU).
func fakeCRIUCheckpointer(t *testing.T, cg string) *Checkpointer {
	t.Helper()
	svc, err := NewCRIUService(fakeCRIU, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	st := &RuncState{ID: "hooks", InitPid: os.Getpid(), CgroupPaths: map[string]string{"freezer": cg}, Config: RuncConfig{Rootfs: "/"}}
	return &Checkpointer{cfg: CheckpointerConfig{ID: "hooks"}, log: discardLogger(), state: st, freezer: &Freezer{Dir: cg}, criu: svc}
}

func TestCRIULogErrors(t *testing.T) {
	rlimit := "(00.010502) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n"
	for _, tc := range []struct {
		name, log string
		want      string
	}{
		{"the real cause, not the rlimit warning", rlimit + "(00.031) Error (criu/sk-inet.c:189): inet: Unsupported proto 262\n(00.032) Error (criu/cr-dump.c:1660): Dump files (pid: 1) failed with -1\n",
			"(00.031) Error (criu/sk-inet.c:189): inet: Unsupported proto 262 | (00.032) Error (criu/cr-dump.c:1660): Dump files (pid: 1) failed with -1"},
		{"only the warning", rlimit, "no error lines in the log"},
		{"more than max", "Error (a): 1\nError (b): 2\nError (c): 3\nError (d): 4\n", "Error (a): 1 | Error (b): 2 | Error (c): 3 | ..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "dump.log")
			if err := os.WriteFile(p, []byte(tc.log), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := criuLogErrors(p, 3); got != tc.want {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
	if got := criuLogErrors(filepath.Join(t.TempDir(), "none"), 3); !strings.HasPrefix(got, "log unreadable") {
		t.Errorf("missing log: %q", got)
	}
}

// With PrepareNext the dump after each checkpoint is asked for at once,
// in a directory of its own that the next checkpoint takes over (CRIU
// writes through the directory it opened, as the fake does); a prepared
// dump for another place is cancelled and the checkpoint still happens;
// Close leaves no prepared directory or CRIU process behind.
func TestCheckpointPreparedNext(t *testing.T) {
	t.Setenv("RRC_FAKE_CRIU", "1")
	t.Setenv("RRC_FAKE_CRIU_IMAGES", "1")
	t.Setenv("RRC_FAKE_CRIU_DELAY_MS", "30") // opens the images dir late, as CRIU does
	cg := fakeCgroup(t, false)
	c := fakeCRIUCheckpointer(t, cg)
	c.cfg.PrepareNext = true
	parent := t.TempDir()
	prepared := func() []string {
		m, _ := filepath.Glob(filepath.Join(parent, ".next-*"))
		return m
	}
	waitPrepared := func() {
		t.Helper()
		for i := 0; i < 200 && len(prepared()) == 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if len(prepared()) != 1 {
			t.Fatalf("prepared directories %v, want one", prepared())
		}
	}
	for i, dir := range []string{"e1", "e2", "e3"} {
		d := filepath.Join(parent, dir)
		if i == 1 {
			if err := os.Mkdir(d, 0o700); err != nil { // made empty by the caller: replaced
				t.Fatal(err)
			}
		}
		if _, err := c.Checkpoint(context.Background(), d); err != nil {
			t.Fatalf("checkpoint %s: %v", dir, err)
		}
		if b, err := os.ReadFile(filepath.Join(d, "pages.img")); err != nil || string(b) != "state" {
			t.Fatalf("checkpoint %s: pages.img %q, %v", dir, b, err)
		}
		if _, err := os.Stat(filepath.Join(d, descriptorsFile)); err != nil {
			t.Fatalf("checkpoint %s: %v", dir, err)
		}
		waitPrepared()
	}
	// Elsewhere: the prepared dump is not used, the checkpoint is made.
	other := filepath.Join(t.TempDir(), "e4")
	if _, err := c.Checkpoint(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other, "pages.img")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if m := prepared(); len(m) != 0 {
		t.Errorf("prepared directories left after Close: %v", m)
	}
	if state, _ := os.ReadFile(filepath.Join(cg, "freezer.state")); strings.TrimSpace(string(state)) != "THAWED" {
		t.Errorf("container left %s", state)
	}
}
