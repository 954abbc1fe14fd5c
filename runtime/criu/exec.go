package criu

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Launcher starts helper processes (criu, runc, tar). The shim is a child
// subreaper, so a plain os/exec Wait races with its reaper ("wait: no child
// processes"); the shim supplies a Launcher built on containerd's
// reaper.Default.Start/Wait. Tests and tools use OSLauncher.
type Launcher interface {
	// Start starts cmd and returns a function that waits for it and returns
	// its exit status.
	Start(cmd *exec.Cmd) (wait func() (exitStatus int, err error), err error)
}

// OSLauncher starts processes with os/exec. Not safe inside a subreaper that
// reaps children itself.
type OSLauncher struct{}

// Start implements Launcher.
func (OSLauncher) Start(cmd *exec.Cmd) (func() (int, error), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (int, error) {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), nil
		}
		if err != nil {
			return -1, err
		}
		return 0, nil
	}, nil
}

// LauncherFunc adapts a function to Launcher (e.g. around reaper.Default).
type LauncherFunc func(cmd *exec.Cmd) (func() (int, error), error)

// Start implements Launcher.
func (f LauncherFunc) Start(cmd *exec.Cmd) (func() (int, error), error) { return f(cmd) }

// runCommand runs name args through l and returns its combined output; a
// non-zero exit is an error carrying the output's tail.
func runCommand(ctx context.Context, l Launcher, name string, args ...string) (string, error) {
	return runCmd(l, exec.CommandContext(ctx, name, args...))
}

// runCmd is runCommand for a command already made (e.g. with its own
// environment).
func runCmd(l Launcher, cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	name := cmd.Args[0]
	wait, err := l.Start(cmd)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	status, err := wait()
	if err != nil {
		return out.String(), fmt.Errorf("wait for %s: %w", name, err)
	}
	if status != 0 {
		return out.String(), fmt.Errorf("%s: exit status %d: %s", strings.Join(cmd.Args, " "), status, tail(out.String(), 2000))
	}
	return out.String(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
