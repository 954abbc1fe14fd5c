// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestRuncRoot(t *testing.T) {
	marshal := func(o *runcoptions.Options) *anypb.Any {
		a, err := typeurl.MarshalAnyToProto(o)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		name string
		ns   string
		opts *anypb.Any
		want string
	}{
		{"no options", "default", nil, "/run/containerd/runc/default"},
		{"empty options", "k8s.io", &anypb.Any{}, "/run/containerd/runc/k8s.io"},
		{"options without root", "lab-a", marshal(&runcoptions.Options{BinaryName: "runc"}), "/run/containerd/runc/lab-a"},
		{"options.Root", "lab-a", marshal(&runcoptions.Options{Root: "/run/other"}), "/run/other/lab-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runcRoot(tc.ns, tc.opts); got != tc.want {
				t.Errorf("runcRoot = %q, want %q", got, tc.want)
			}
		})
	}
}
