// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package legacystart answers the shim's `start` action for containerd 2.0 to 2.2.
//
// Since 2.3, containerd writes a bootstrap.v1.BootstrapParams protobuf to the stdin of
// `containerd-shim-rrc-v1 start` and reads a BootstrapResult protobuf from its stdout, and
// the shim library (pkg/shim, 2.3.7 here) always answers so. Daemons 2.0 to 2.2 pass the
// same through flags and environment, with the runtime options (a protobuf Any) on stdin,
// and parse the answer as JSON {"version","address","protocol"}, or else as a bare
// address: they take the protobuf for one ("unsupported protocol: Yunix"). For them the
// start action is run here, and answered in JSON.
package legacystart

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TTRPCAddressEnv is where every containerd 2.x puts its ttrpc address for the shim.
const TTRPCAddressEnv = "TTRPC_ADDRESS"

// Invocation is the shim's command line as containerd makes it.
type Invocation struct {
	Action        string // "start", "delete", or "" for the shim server
	Namespace     string
	ID            string
	Address       string // containerd's gRPC address
	PublishBinary string // the containerd binary
	Bundle        string
	Debug         bool
}

// Parse reads args (without the program name) with the flags of containerd's shim library.
func Parse(args []string) (Invocation, error) {
	var inv Invocation
	fs := flag.NewFlagSet("containerd-shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var ignoredBool bool
	var ignored string
	fs.BoolVar(&inv.Debug, "debug", false, "")
	fs.BoolVar(&ignoredBool, "v", false, "")
	fs.BoolVar(&ignoredBool, "version", false, "")
	fs.BoolVar(&ignoredBool, "info", false, "")
	fs.StringVar(&inv.Namespace, "namespace", "", "")
	fs.StringVar(&inv.ID, "id", "", "")
	fs.StringVar(&ignored, "socket", "", "")
	fs.StringVar(&ignored, "debug-socket", "", "")
	fs.StringVar(&inv.Bundle, "bundle", "", "")
	fs.StringVar(&inv.Address, "address", "", "")
	fs.StringVar(&inv.PublishBinary, "publish-binary", "", "")
	if err := fs.Parse(args); err != nil {
		return Invocation{}, fmt.Errorf("parse the shim's arguments: %w", err)
	}
	inv.Action = fs.Arg(0)
	return inv, nil
}

// FromDaemonBefore23 reports whether stdin, the start action's, comes from a containerd
// older than 2.3: it is not a BootstrapParams naming the daemon's version, which every 2.3+
// daemon sets. (A runtime options Any can decode as a BootstrapParams, but only into its
// first two fields.)
func FromDaemonBefore23(stdin []byte) bool {
	var p bootapi.BootstrapParams
	if len(stdin) == 0 || proto.Unmarshal(stdin, &p) != nil {
		return true
	}
	return p.GetContainerdVersion() == ""
}

// Params are the BootstrapParams a 2.3 daemon would have sent for inv: ttrpcAddress is
// the daemon's TTRPC_ADDRESS, runtimeOptions the start action's stdin (an Any, or empty).
func Params(inv Invocation, ttrpcAddress string, runtimeOptions []byte) (*bootapi.BootstrapParams, error) {
	p := &bootapi.BootstrapParams{
		InstanceID:             inv.ID,
		Namespace:              inv.Namespace,
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
		ContainerdGrpcAddress:  inv.Address,
		ContainerdTtrpcAddress: ttrpcAddress,
		ContainerdBinary:       inv.PublishBinary,
	}
	if inv.Debug {
		p.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
	}
	if len(runtimeOptions) > 0 {
		var opts anypb.Any
		if err := proto.Unmarshal(runtimeOptions, &opts); err != nil {
			return nil, fmt.Errorf("decode the runtime options on stdin: %w", err)
		}
		// As a 2.3 daemon passes them: the Any itself, whatever its type.
		if err := p.AddExtension(&opts); err != nil {
			return nil, fmt.Errorf("add the runtime options to the bootstrap parameters: %w", err)
		}
	}
	return p, nil
}

// answer is what containerd 2.0 to 2.2 parse from a shim's start (pkg/shim's
// BootstrapParams of those releases).
type answer struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// Answer encodes r the way containerd 2.0 to 2.2 read a shim's start.
func Answer(r *bootapi.BootstrapResult) ([]byte, error) {
	if r.GetAddress() == "" || r.GetProtocol() == "" || r.GetVersion() < 2 {
		return nil, fmt.Errorf("incomplete bootstrap result %v", r)
	}
	return json.Marshal(answer{Version: int(r.GetVersion()), Address: r.GetAddress(), Protocol: r.GetProtocol()})
}

// Start runs the start action of inv for a daemon before 2.3 with m, as pkg/shim runs
// it for a newer one, and writes the answer to out. What pkg/shim sets up before
// (signals, subreaper, GC) serves the long-running shim, not this helper that spawns it.
func Start(ctx context.Context, m shim.Shim, inv Invocation, ttrpcAddress string, runtimeOptions []byte, out io.Writer) error {
	if inv.Namespace == "" {
		return errors.New("shim namespace cannot be empty")
	}
	params, err := Params(inv, ttrpcAddress, runtimeOptions)
	if err != nil {
		return err
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("runtime", m.Name()))
	ctx = namespaces.WithNamespace(ctx, inv.Namespace)
	ctx = context.WithValue(ctx, shim.OptsKey{}, shim.Opts{BundlePath: inv.Bundle, Debug: inv.Debug})
	result, err := m.Start(ctx, params)
	if err != nil {
		return err
	}
	data, err := Answer(result)
	if err != nil {
		return err
	}
	if _, err := out.Write(data); err != nil {
		return fmt.Errorf("write the start answer: %w", err)
	}
	return nil
}
