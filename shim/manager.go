// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Manager starts and stops shim processes. It is the runc shim manager under
// the io.rrc.v1 name, with runtime options translated as in Create.
type Manager struct {
	shim.Shim
}

// NewManager returns the shim manager for runtime name.
func NewManager(name string) *Manager {
	return &Manager{Shim: manager.NewShimManager(name)}
}

// Info reports the runtime's features. containerd passes the runtime
// options on stdin; CRI's runtimeoptions.Options are translated first.
func (m *Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	data, err := io.ReadAll(optionsR)
	if err != nil {
		return nil, fmt.Errorf("read runtime options: %w", err)
	}
	if len(data) > 0 {
		var in anypb.Any
		if err := proto.Unmarshal(data, &in); err != nil {
			return nil, fmt.Errorf("decode runtime options: %w", err)
		}
		out, err := RuncOptions(&in)
		if err != nil {
			return nil, err
		}
		if data, err = proto.Marshal(out); err != nil {
			return nil, fmt.Errorf("encode runc options: %w", err)
		}
	}
	return m.Shim.Info(ctx, bytes.NewReader(data))
}
