// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRefuseGateBypass(t *testing.T) {
	// containerd's default spec (pkg/oci): CAP_NET_RAW in bounding,
	// effective and permitted.
	defaults := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETUID"}
	safe := slices.DeleteFunc(slices.Clone(defaults), func(c string) bool { return c == "CAP_NET_RAW" })
	for _, tc := range []struct {
		name string
		caps *specs.LinuxCapabilities
		want []string // substrings of the error; nil: accepted
	}{
		{name: "no process capabilities", caps: nil},
		{name: "defaults with CAP_NET_RAW dropped", caps: &specs.LinuxCapabilities{Bounding: safe, Effective: safe, Permitted: safe}},
		{name: "containerd's defaults", caps: &specs.LinuxCapabilities{Bounding: defaults, Effective: defaults, Permitted: defaults},
			want: []string{"CAP_NET_RAW (bounding, effective, permitted)", "--cap-drop CAP_NET_RAW", "packet socket", "/run/netns/x"}},
		{name: "CAP_NET_ADMIN added", caps: &specs.LinuxCapabilities{Bounding: append(safe, "CAP_NET_ADMIN"), Effective: append(safe, "CAP_NET_ADMIN")},
			want: []string{"CAP_NET_ADMIN (bounding, effective)", "removes the gate's rules"}},
		{name: "only in the bounding set", caps: &specs.LinuxCapabilities{Bounding: []string{"CAP_NET_RAW"}},
			want: []string{"CAP_NET_RAW (bounding)"}},
		{name: "only inheritable", caps: &specs.LinuxCapabilities{Inheritable: []string{"CAP_NET_ADMIN"}},
			want: []string{"CAP_NET_ADMIN (inheritable)"}},
		{name: "only ambient, lower case", caps: &specs.LinuxCapabilities{Ambient: []string{"cap_net_raw"}},
			want: []string{"CAP_NET_RAW (ambient)"}},
		{name: "both", caps: &specs.LinuxCapabilities{Permitted: []string{"CAP_NET_RAW", "CAP_NET_ADMIN"}},
			want: []string{"CAP_NET_RAW (permitted) and CAP_NET_ADMIN (permitted)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &specs.Spec{Process: &specs.Process{Capabilities: tc.caps}}
			err := refuseGateBypass(spec, "/run/netns/x")
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if err := refuseGateBypass(&specs.Spec{}, "/run/netns/x"); err != nil {
		t.Errorf("spec without a process: %v", err)
	}
}

func TestRefuseExecGateBypass(t *testing.T) {
	for _, tc := range []struct {
		name, process string
		want          string // substring of the error; "": accepted
	}{
		{name: "the container's dropped set", process: `{"args":["sh"],"capabilities":{"bounding":["CAP_CHOWN"],"effective":["CAP_CHOWN"]}}`},
		{name: "no capabilities", process: `{"args":["sh"]}`},
		{name: "exec adds CAP_NET_RAW", process: `{"args":["sh"],"capabilities":{"bounding":["CAP_CHOWN","CAP_NET_RAW"],"permitted":["CAP_NET_RAW"]}}`, want: "CAP_NET_RAW (bounding, permitted)"},
		{name: "exec adds CAP_NET_ADMIN as ambient", process: `{"args":["sh"],"capabilities":{"ambient":["CAP_NET_ADMIN"]}}`, want: "CAP_NET_ADMIN (ambient)"},
		{name: "not a process", process: `[1,2]`, want: "read the exec's process spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := refuseExecGateBypass([]byte(tc.process), "/run/netns/x")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
