// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/runtime/launch"
)

// TestRunCreateHooks: the backup runs the spec's prestart and createRuntime
// hooks in order, with the OCI state (no pid, nerdctl's namespace
// annotation, the spec's annotations) on stdin, then takes them out of the
// spec and leaves the poststop ones; poststop hooks run with state stopped.
func TestRunCreateHooks(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "calls")
	hook := func(name string) specs.Hook {
		// Each call appends its name and the state it got.
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", `{ echo ` + name + `; cat; echo; } >>"$0"`, record}}
	}
	spec := specs.Spec{Version: "1.2.0", Annotations: map[string]string{"nerdctl/name": "web"},
		Hooks: &specs.Hooks{Prestart: []specs.Hook{hook("prestart")}, CreateRuntime: []specs.Hook{hook("create")}, Poststop: []specs.Hook{hook("poststop")}}} //nolint:staticcheck // Prestart: runc still runs it
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := runCreateHooks(context.Background(), launch.OS{}, dir, "c1", "/run/x/netns"); err != nil {
		t.Fatal(err)
	}
	calls := readCalls(t, record)
	if len(calls) != 2 || calls[0].name != "prestart" || calls[1].name != "create" {
		t.Fatalf("calls %+v, want prestart then create", calls)
	}
	st := calls[1].state
	if st.ID != "c1" || st.Bundle != dir || st.Pid != 0 || st.Status != specs.StateCreating ||
		st.Annotations[nerdctlNetnsAnnotation] != "/run/x/netns" || st.Annotations["nerdctl/name"] != "web" {
		t.Errorf("state %+v", st)
	}
	after, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Hooks.Prestart) != 0 || len(after.Hooks.CreateRuntime) != 0 || len(after.Hooks.Poststop) != 1 { //nolint:staticcheck // Prestart: runc still runs it
		t.Errorf("hooks left in the spec: %+v", after.Hooks)
	}

	if err := runPoststopHooks(context.Background(), launch.OS{}, dir, "c1", "/run/x/netns"); err != nil {
		t.Fatal(err)
	}
	calls = readCalls(t, record)
	if len(calls) != 3 || calls[2].name != "poststop" || calls[2].state.Status != specs.StateStopped {
		t.Fatalf("calls %+v, want a poststop with state stopped", calls)
	}
}

type hookCall struct {
	name  string
	state specs.State
}

func readCalls(t *testing.T, path string) []hookCall {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var calls []hookCall
	lines := strings.Fields(string(b)) // names, then one-line JSON without spaces
	for i := 0; i+1 < len(lines); i += 2 {
		var c hookCall
		c.name = lines[i]
		if err := json.Unmarshal([]byte(lines[i+1]), &c.state); err != nil {
			t.Fatalf("state %q: %v", lines[i+1], err)
		}
		calls = append(calls, c)
	}
	return calls
}
