// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/iorrc/rrc/runtime/launch"
)

// kernelCacheVar names the cache file to the criu-written library.
const kernelCacheVar = "RRC_KDAT_CACHE"

// KernelCache is CRIU's kernel-feature cache (kerndat: dozens of probes, an
// iptables run among them) kept in a file of the caller's by the
// criu-written library, since CRIU keeps its own only where /run is a tmpfs.
// Without it every CRIU run probes again: most of a dump's start-up, and a
// third to half of a restore (docs/CHECKPOINT.md).
type KernelCache struct {
	Preload string // the criu-written library
	// File is the cache; CRIU writes it when it finds none, and only on a
	// tmpfs (so that no cache outlives a reboot).
	File string
}

// Env is what CRIU's environment needs for the cache: the library and the
// file. A process that starts CRIU (runc) passes it on.
func (k KernelCache) Env() []string {
	return []string{"LD_PRELOAD=" + k.Preload, kernelCacheVar + "=" + k.File}
}

// Warm writes the cache afresh with `criu check` run through cmd (so in
// cmd's network namespace, which some probes look at), for a later CRIU run
// to load instead of probing. A cache from an earlier kernel or CRIU is
// removed first rather than trusted.
func (k KernelCache) Warm(ctx context.Context, cmd CRIUCommand) error {
	if k.Preload == "" || k.File == "" {
		return errors.New("kernel-feature cache: no criu-written library or no file configured")
	}
	if err := os.Remove(k.File); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kernel-feature cache: %w", err)
	}
	argv := cmd.argv()
	c := exec.CommandContext(ctx, argv[0], append(argv[1:], "check")...)
	c.Env = append(append(os.Environ(), cmd.Env...), k.Env()...)
	if _, err := launch.Output(cmd.launcher(), c); err != nil {
		return fmt.Errorf("kernel-feature cache: %w", err)
	}
	if _, err := os.Stat(k.File); err != nil {
		return fmt.Errorf("kernel-feature cache: criu check wrote none: %w", err)
	}
	return nil
}
