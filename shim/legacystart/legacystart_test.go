// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package legacystart

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The command line containerd 2.0 to 2.2 give `start` (pkg/shim's Command and the
// runtime's binary.Start of those releases).
var args20 = []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
	"-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"}

func runcOptions(t *testing.T) []byte {
	t.Helper()
	a, err := anypb.New(&options.Options{BinaryName: "runc", ShimCgroup: "/shims/c1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	inv, err := Parse(args20)
	if err != nil {
		t.Fatal(err)
	}
	want := Invocation{Action: "start", Namespace: "k8s.io", ID: "c1", Address: "/run/containerd/containerd.sock",
		PublishBinary: "/usr/bin/containerd", Debug: true}
	if inv != want {
		t.Errorf("Parse = %+v, want %+v", inv, want)
	}
	inv, err = Parse([]string{"-namespace", "n", "-id", "c1", "-bundle", "/b", "delete"})
	if err != nil || inv.Action != "delete" || inv.Bundle != "/b" {
		t.Errorf("Parse of delete = %+v, %v", inv, err)
	}
	if _, err := Parse([]string{"-no-such-flag", "start"}); err == nil {
		t.Error("Parse accepted an unknown flag")
	}
}

func TestFromDaemonBefore23(t *testing.T) {
	opts := runcOptions(t)
	// The case that needs more than "does it decode": runc options decode as
	// BootstrapParams (type URL as instance id), as pkg/shim 2.3 then takes them.
	var misread bootapi.BootstrapParams
	if err := proto.Unmarshal(opts, &misread); err != nil || misread.GetInstanceID() == "" {
		t.Fatalf("runc options no longer decode as BootstrapParams (%v, %v): simplify FromDaemonBefore23", err, &misread)
	}
	if !FromDaemonBefore23(opts) {
		t.Error("runc options on stdin taken for a 2.3 daemon's BootstrapParams")
	}
	if !FromDaemonBefore23(nil) {
		t.Error("empty stdin taken for a 2.3 daemon's")
	}
	if !FromDaemonBefore23([]byte{0xff, 0xff}) {
		t.Error("undecodable stdin taken for a 2.3 daemon's")
	}
	// What containerd 2.3's pkg/shim Command writes.
	p := &bootapi.BootstrapParams{InstanceID: "c1", Namespace: "k8s.io", ContainerdVersion: "2.3.7",
		ContainerdTtrpcAddress: "/run/containerd/containerd.sock.ttrpc"}
	a, _ := anypb.New(&options.Options{BinaryName: "runc"})
	if err := p.AddExtension(a); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if FromDaemonBefore23(b) {
		t.Error("a 2.3 daemon's BootstrapParams taken for an older daemon's stdin")
	}
}

func TestParams(t *testing.T) {
	inv, _ := Parse(args20)
	p, err := Params(inv, "/run/containerd/containerd.sock.ttrpc", runcOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if p.GetInstanceID() != "c1" || p.GetNamespace() != "k8s.io" ||
		p.GetContainerdGrpcAddress() != "/run/containerd/containerd.sock" ||
		p.GetContainerdTtrpcAddress() != "/run/containerd/containerd.sock.ttrpc" ||
		p.GetContainerdBinary() != "/usr/bin/containerd" || p.GetLogLevel() != bootapi.LogLevel_LOG_LEVEL_DEBUG {
		t.Errorf("Params = %v", p)
	}
	// The runc shim manager reads the shim cgroup from this extension.
	var ro options.Options
	if found, err := p.FindExtension(&ro); err != nil || !found || ro.GetShimCgroup() != "/shims/c1" {
		t.Errorf("runc options extension: found %v, %v, %v", found, err, &ro)
	}

	inv.Debug = false
	p, err = Params(inv, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The runc manager turns debug on for any level <= debug.
	if p.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG || len(p.GetExtensions()) != 0 {
		t.Errorf("Params without -debug and options = %v", p)
	}
	if _, err := Params(inv, "", []byte{0xff}); err == nil {
		t.Error("Params accepted undecodable runtime options")
	}
}

// TestAnswer decodes the answer into pkg/shim's BootstrapParams, the type containerd
// 2.0 to 2.2 decode a start answer into, and checks it is not a bare address.
func TestAnswer(t *testing.T) {
	const addr = "unix:///run/containerd/s/0123456789abcdef"
	b, err := Answer(&bootapi.BootstrapResult{Version: 3, Address: addr, Protocol: "ttrpc"})
	if err != nil {
		t.Fatal(err)
	}
	var got shim.BootstrapParams //nolint:staticcheck // the answer format of containerd before 2.3
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("answer %q is not JSON: %v", b, err)
	}
	if got.Version != 3 || got.Address != addr || got.Protocol != "ttrpc" {
		t.Errorf("answer %q decodes to %+v", b, got)
	}
	if _, err := Answer(&bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}); err == nil {
		t.Error("Answer without an address")
	}
}

// recordingShim is the shim manager's side of Start: what pkg/shim would call.
type recordingShim struct {
	ns     string
	params *bootapi.BootstrapParams
}

func (r *recordingShim) Name() string { return "io.rrc.v1" }

func (r *recordingShim) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	r.ns, _ = namespaces.Namespace(ctx)
	r.params = p
	return &bootapi.BootstrapResult{Version: 3, Address: "unix:///s/1", Protocol: "ttrpc"}, nil
}

func (r *recordingShim) Stop(context.Context, string) (shim.StopStatus, error) {
	return shim.StopStatus{}, nil
}

func (r *recordingShim) Info(context.Context, io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{}, nil
}

func TestStart(t *testing.T) {
	inv, _ := Parse(args20)
	var m recordingShim
	var out bytes.Buffer
	if err := Start(context.Background(), &m, inv, "/t.ttrpc", runcOptions(t), &out); err != nil {
		t.Fatal(err)
	}
	if m.ns != "k8s.io" || m.params.GetInstanceID() != "c1" || m.params.GetContainerdTtrpcAddress() != "/t.ttrpc" {
		t.Errorf("manager started in namespace %q with %v", m.ns, m.params)
	}
	if out.String() != `{"version":3,"address":"unix:///s/1","protocol":"ttrpc"}` {
		t.Errorf("answer %q", out.String())
	}
	inv.Namespace = ""
	if err := Start(context.Background(), &m, inv, "", nil, io.Discard); err == nil {
		t.Error("Start without a namespace")
	}
}
