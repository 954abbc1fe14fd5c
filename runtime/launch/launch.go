// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package launch starts the helper processes of io.rrc.v1 (criu, runc,
// iptables, nsenter). The shim is a child subreaper whose reaper waits for
// every child, so a plain os/exec Wait races with it ("wait: no child
// processes"): the shim supplies a Launcher built on containerd's reaper;
// tests and tools use OS.
package launch

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Launcher starts a prepared command.
type Launcher interface {
	// Start starts cmd and returns a function that waits for it and returns
	// its exit status.
	Start(cmd *exec.Cmd) (wait func() (exitStatus int, err error), err error)
}

// OS starts processes with os/exec. Not safe inside a subreaper that reaps
// children itself.
type OS struct{}

// Start implements Launcher.
func (OS) Start(cmd *exec.Cmd) (func() (int, error), error) {
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

// Func adapts a function to Launcher (e.g. around containerd's reaper).
type Func func(cmd *exec.Cmd) (func() (int, error), error)

// Start implements Launcher.
func (f Func) Start(cmd *exec.Cmd) (func() (int, error), error) { return f(cmd) }

// Or is l, or OS if l is nil.
func Or(l Launcher) Launcher {
	if l == nil {
		return OS{}
	}
	return l
}

// Output runs cmd through l (nil: OS) and returns its combined output; a
// non-zero exit is an error carrying the command line and the output's tail.
func Output(l Launcher, cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	name := cmd.Args[0]
	wait, err := Or(l).Start(cmd)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	status, err := wait()
	if err != nil {
		return out.String(), fmt.Errorf("wait for %s: %w", name, err)
	}
	if status != 0 {
		return out.String(), fmt.Errorf("%s: exit status %d: %s", strings.Join(cmd.Args, " "), status, Tail(out.String(), 2000))
	}
	return out.String(), nil
}

// Command runs name args through l with stdin (nil: none) and returns its
// combined output, as Output.
func Command(ctx context.Context, l Launcher, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return Output(l, cmd)
}

// Tail is the last n bytes of s, trimmed, marked when cut.
func Tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
