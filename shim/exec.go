// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"os/exec"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"

	"github.com/iorrc/rrc/runtime/launch"
)

// The shim is a subreaper and its reaper waits for every child: a helper
// started with plain os/exec races with it ("wait: no child processes").
// Everything the shim runs (CRIU, runc, iptables) goes through the reaper.

// reaperLauncher starts commands through containerd's reaper.
func reaperLauncher() launch.Launcher {
	return launch.Func(func(cmd *exec.Cmd) (func() (int, error), error) {
		ec, err := reaper.Default.Start(cmd)
		if err != nil {
			return nil, err
		}
		return func() (int, error) { return reaper.Default.Wait(cmd, ec) }, nil
	})
}
