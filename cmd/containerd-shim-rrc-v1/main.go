// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command containerd-shim-rrc-v1 is the containerd shim v2 of the io.rrc.v1 runtime.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	rrcshim "github.com/iorrc/rrc/shim"
	"github.com/iorrc/rrc/shim/settings"
)

func main() {
	registerTaskService()
	shim.RunShim(context.Background(), rrcshim.NewManager(settings.RuntimeName))
}

// registerTaskService puts io.rrc.v1's task service where the shim library
// finds its ttrpc services, in containerd's plugin registry, in place of
// the runc shim's task plugin.
func registerTaskService() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return rrcshim.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service), ic.Properties[plugins.PropertyGRPCAddress])
		},
	})
}
