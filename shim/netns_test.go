// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestPlanNetns(t *testing.T) {
	withNS := func(path string) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: path}}}}
	}
	hostNet := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}}
	// nerdctl's CNI networks: a fresh netns and a createRuntime hook.
	hooked := func(path string) *specs.Spec {
		s := withNS(path)
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/local/bin/nerdctl", Args: []string{"nerdctl", "internal", "oci-hook", "createRuntime"}}}}
		return s
	}
	for _, tc := range []struct {
		name      string
		spec      *specs.Spec
		serviceIP bool
		plan      netnsPlan
		path      string
		errHas    []string
	}{
		{name: "service ip, fresh netns", spec: withNS(""), serviceIP: true, plan: netnsCreate},
		{name: "service ip, host network", spec: hostNet, serviceIP: true, plan: netnsCreate},
		{name: "service ip and a CNI netns", spec: withNS("/var/run/netns/cni-1"), serviceIP: true, errHas: []string{"io.rrc.service-ip", "/var/run/netns/cni-1"}},
		{name: "CNI netns adopted", spec: withNS("/var/run/netns/cni-1"), plan: netnsAdopt, path: "/var/run/netns/cni-1"},
		{name: "fresh netns, unreachable", spec: withNS(""), errHas: []string{"io.rrc.role", "io.rrc.service-ip"}},
		{name: "fresh netns made by hooks", spec: hooked(""), plan: netnsHooks},
		{name: "hooks and a netns path: adopted", spec: hooked("/var/run/netns/cni-1"), plan: netnsAdopt, path: "/var/run/netns/cni-1"},
		{name: "hooks and a service ip", spec: hooked(""), serviceIP: true, plan: netnsCreate},
		{name: "host network refused", spec: hostNet, errHas: []string{"io.rrc.role", "host's network"}},
		{name: "no linux section", spec: &specs.Spec{}, errHas: []string{"io.rrc.role", "host's network"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, path, err := planNetns(tc.spec, tc.serviceIP)
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("no error; plan %d", plan)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %q", err, s)
					}
				}
				return
			}
			if err != nil || plan != tc.plan || path != tc.path {
				t.Fatalf("got %d %q %v, want %d %q", plan, path, err, tc.plan, tc.path)
			}
		})
	}
}

func TestWithNetns(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"replaces the path", `{"ociVersion":"1.1.0","linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}`},
		{"replaces an existing path", `{"linux":{"namespaces":[{"type":"network","path":"/old"}]}}`},
		{"adds the namespace", `{"linux":{"namespaces":[{"type":"pid"}]}}`},
		{"adds linux", `{"process":{"args":["sh"]}}`},
		{"keeps unknown fields", `{"linux":{"namespaces":[],"futureField":{"x":1}},"vendorThing":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := withNetns([]byte(tc.in), "/run/rrc/netns/x")
			if err != nil {
				t.Fatal(err)
			}
			var s specs.Spec
			if err := json.Unmarshal(out, &s); err != nil {
				t.Fatal(err)
			}
			if p, own := specNetns(&s); p != "/run/rrc/netns/x" || !own {
				t.Fatalf("netns %q %v in %s", p, own, out)
			}
			n := 0
			for _, ns := range s.Linux.Namespaces {
				if ns.Type == specs.NetworkNamespace {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d network namespaces in %s", n, out)
			}
			var in, got map[string]any
			if err := json.Unmarshal([]byte(tc.in), &in); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			for k := range in {
				if _, ok := got[k]; !ok {
					t.Errorf("field %s lost: %s", k, out)
				}
			}
			if strings.Contains(tc.in, "futureField") && !strings.Contains(string(out), "futureField") {
				t.Errorf("unknown field lost: %s", out)
			}
		})
	}
	if _, err := withNetns([]byte("{"), "/x"); err == nil {
		t.Error("bad JSON accepted")
	}
}

func TestSetSpecNetns(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"linux":{"namespaces":[{"type":"network"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := setSpecNetns(dir, "/ns"); err != nil {
		t.Fatal(err)
	}
	s, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := specNetns(s); p != "/ns" {
		t.Fatalf("netns %q", p)
	}
	if err := setSpecNetns(filepath.Join(dir, "missing"), "/ns"); err == nil {
		t.Error("missing bundle accepted")
	}
}
