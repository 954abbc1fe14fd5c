// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRuncOptions(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "runc.toml")
	if err := os.WriteFile(cfgFile, []byte("BinaryName = \"/usr/sbin/runc\"\nSystemdCgroup = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustAny := func(v any) *anypb.Any {
		a, err := typeurl.MarshalAnyToProto(v)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name    string
		in      *anypb.Any
		want    *runcoptions.Options // nil: expect the input back unchanged
		wantErr string
	}{
		{name: "none", in: nil},
		{name: "runc options pass through", in: mustAny(&runcoptions.Options{BinaryName: "runc", Root: "/run/x"})},
		{name: "runtimeoptions body", in: mustAny(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"crun\"\nRoot = \"/run/r\"\nNoPivotRoot = true\n")}),
			want: &runcoptions.Options{BinaryName: "crun", Root: "/run/r", NoPivotRoot: true}},
		{name: "runtimeoptions path", in: mustAny(&runtimeoptions.Options{ConfigPath: cfgFile}),
			want: &runcoptions.Options{BinaryName: "/usr/sbin/runc", SystemdCgroup: true}},
		{name: "runtimeoptions empty", in: mustAny(&runtimeoptions.Options{}), want: &runcoptions.Options{}},
		{name: "runtimeoptions missing file", in: mustAny(&runtimeoptions.Options{ConfigPath: filepath.Join(dir, "nope.toml")}), wantErr: "read runtime options file"},
		{name: "runtimeoptions bad toml", in: mustAny(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = ")}), wantErr: "parse runtime options TOML"},
		{name: "foreign type", in: mustAny(durationpb.New(5)), wantErr: "not supported by io.rrc.v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := RuncOptions(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if out != tc.in {
					t.Fatalf("options changed: %v -> %v", tc.in, out)
				}
				return
			}
			v, err := typeurl.UnmarshalAny(out)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := v.(*runcoptions.Options)
			if !ok {
				t.Fatalf("got %T, want runc options", v)
			}
			if got.BinaryName != tc.want.BinaryName || got.Root != tc.want.Root || got.SystemdCgroup != tc.want.SystemdCgroup || got.NoPivotRoot != tc.want.NoPivotRoot {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
