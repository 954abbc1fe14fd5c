package shim

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"

	"github.com/iorrc/rrc/netfilter"
	"github.com/iorrc/rrc/runtime/criu"
)

// The shim is a subreaper and its reaper waits for every child: a helper
// started with plain os/exec races with it ("wait: no child processes").
// Everything the shim runs (CRIU, runc, iptables) goes through the reaper.

// reaperLauncher starts commands through containerd's reaper.
func reaperLauncher() criu.Launcher {
	return criu.LauncherFunc(func(cmd *exec.Cmd) (func() (int, error), error) {
		ec, err := reaper.Default.Start(cmd)
		if err != nil {
			return nil, err
		}
		return func() (int, error) { return reaper.Default.Wait(cmd, ec) }, nil
	})
}

// reaperCommandRunner is netfilter's CommandRunner through the reaper.
func reaperCommandRunner() netfilter.CommandRunner {
	return func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		ec, err := reaper.Default.Start(cmd)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		status, err := reaper.Default.Wait(cmd, ec)
		if err == nil && status != 0 {
			err = fmt.Errorf("%s exited with status %d", name, status)
		}
		if err != nil {
			return out.Bytes(), fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(out.Bytes()))
		}
		return out.Bytes(), nil
	}
}
