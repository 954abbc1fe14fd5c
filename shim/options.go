// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"os"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// RuncOptions turns the runtime options containerd passes into the runc
// options the wrapped runc task service expects. CRI and Docker send
// runtimeoptions.Options for any runtime that is not io.containerd.runc.v2;
// its TOML body (or the file it names) holds runc option fields by their Go
// names (BinaryName, SystemdCgroup, Root, ...). The runc service would panic on
// a type assertion if handed anything but runc options.
func RuncOptions(in *anypb.Any) (*anypb.Any, error) {
	if in.GetValue() == nil && in.GetTypeUrl() == "" {
		return in, nil
	}
	v, err := typeurl.UnmarshalAny(in)
	if err != nil {
		return nil, fmt.Errorf("decode runtime options %q: %w", in.GetTypeUrl(), err)
	}
	switch o := v.(type) {
	case *runcoptions.Options:
		return in, nil
	case *runtimeoptions.Options:
		ro, err := fromRuntimeOptions(o)
		if err != nil {
			return nil, err
		}
		return typeurl.MarshalAnyToProto(ro)
	default:
		return nil, fmt.Errorf("runtime options of type %T are not supported by io.rrc.v1: %w", v, errdefs.ErrInvalidArgument)
	}
}

func fromRuntimeOptions(o *runtimeoptions.Options) (*runcoptions.Options, error) {
	body := o.ConfigBody
	if len(body) == 0 && o.ConfigPath != "" {
		b, err := os.ReadFile(o.ConfigPath)
		if err != nil {
			return nil, fmt.Errorf("read runtime options file %s: %w", o.ConfigPath, err)
		}
		body = b
	}
	var ro runcoptions.Options
	if len(body) == 0 {
		return &ro, nil
	}
	// Decode into a plain struct: toml cannot fill protobuf internals.
	var t struct {
		NoPivotRoot    bool
		NoNewKeyring   bool
		ShimCgroup     string
		IoUid          uint32
		IoGid          uint32
		BinaryName     string
		Root           string
		SystemdCgroup  bool
		CriuImagePath  string
		CriuWorkPath   string
		TaskApiAddress string
		TaskApiVersion uint32
	}
	if err := toml.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("parse runtime options TOML: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	ro.NoPivotRoot, ro.NoNewKeyring, ro.ShimCgroup = t.NoPivotRoot, t.NoNewKeyring, t.ShimCgroup
	ro.IoUid, ro.IoGid, ro.BinaryName, ro.Root = t.IoUid, t.IoGid, t.BinaryName, t.Root
	ro.SystemdCgroup, ro.CriuImagePath, ro.CriuWorkPath = t.SystemdCgroup, t.CriuImagePath, t.CriuWorkPath
	// Deprecated in runc's options but still read by the runc shim:
	// carried over as given.
	ro.TaskApiAddress, ro.TaskApiVersion = t.TaskApiAddress, t.TaskApiVersion //nolint:staticcheck // see above
	return &ro, nil
}
