// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command containerd-shim-rrc-v1 is the containerd shim v2 of the io.rrc.v1 runtime.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	rrcshim "github.com/iorrc/rrc/shim"
	"github.com/iorrc/rrc/shim/legacystart"
	"github.com/iorrc/rrc/shim/settings"
)

func main() {
	registerTaskService()
	m := rrcshim.NewManager(settings.RuntimeName)
	if startedForDaemonBefore23(m) {
		return
	}
	shim.RunShim(context.Background(), m)
}

// startedForDaemonBefore23 runs the start action here when containerd 2.0 to 2.2 asked
// for it: they read the answer as JSON, pkg/shim writes protobuf (package legacystart).
// For a newer daemon, or another action, it puts stdin back for pkg/shim and reports false.
func startedForDaemonBefore23(m shim.Shim) bool {
	inv, err := legacystart.Parse(os.Args[1:])
	if err != nil || inv.Action != "start" {
		return false // pkg/shim reports wrong arguments
	}
	// pkg/shim reads at most as much.
	stdin, err := io.ReadAll(io.LimitReader(os.Stdin, 10<<20))
	if err != nil {
		fail(m, fmt.Errorf("failed to read stdin: %w", err))
	}
	if !legacystart.FromDaemonBefore23(stdin) {
		if os.Stdin, err = replay(stdin); err != nil {
			fail(m, err)
		}
		return false
	}
	ttrpcAddress := os.Getenv(legacystart.TTRPCAddressEnv)
	if err := legacystart.Start(context.Background(), m, inv, ttrpcAddress, stdin, os.Stdout); err != nil {
		fail(m, err)
	}
	return true
}

// replay is a pipe that reads data, then end of file.
func replay(data []byte) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for stdin: %w", err)
	}
	go func() {
		_, _ = w.Write(data)
		w.Close()
	}()
	return r, nil
}

// fail ends the shim as pkg/shim does: containerd shows stderr to the user.
func fail(m shim.Shim, err error) {
	fmt.Fprintf(os.Stderr, "%s: %s", m.Name(), err)
	os.Exit(1)
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
