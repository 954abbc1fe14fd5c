// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/runtime/launch"
)

// nerdctlNetnsAnnotation names the network namespace nerdctl's OCI hook
// ("nerdctl internal oci-hook") passes to CNI, in preference to
// /proc/<state pid>/ns/net: nerdctl's way for runtimes whose state pid is
// not in the container's namespace, as the backup's standby task is not.
const nerdctlNetnsAnnotation = "nerdctl/network-namespace"

// networkHooks reports whether the spec's network is made by its hooks, as
// nerdctl makes its CNI networks: a fresh network namespace (no path), and
// prestart or createRuntime hooks, which runc runs once it has made it.
func networkHooks(spec *specs.Spec) bool {
	ns, own := specNetns(spec)
	return own && ns == "" && spec.Hooks != nil &&
		(len(spec.Hooks.Prestart) > 0 || len(spec.Hooks.CreateRuntime) > 0) //nolint:staticcheck // Prestart: runc still runs it
}

// runCreateHooks runs the prestart and createRuntime hooks of the bundle's
// spec as runc runs them at create, for a backup, which runs no runc create
// until a promotion: they make its standby copy of the network in nsPath.
// They get no pid (the standby task has no process in nsPath): a hook that
// needs one fails instead of configuring the shim's own namespace. Then it
// takes them out of the spec, which the restore at a promotion runs with:
// runc restore would run them again, on a namespace they already made.
func runCreateHooks(ctx context.Context, l launch.Launcher, bundle, id, nsPath string) error {
	spec, err := readSpec(bundle)
	if err != nil {
		return err
	}
	state, err := hookState(spec, id, bundle, nsPath, specs.StateCreating)
	if err != nil {
		return err
	}
	hooks := append(append([]specs.Hook{}, spec.Hooks.Prestart...), spec.Hooks.CreateRuntime...) //nolint:staticcheck // Prestart: runc still runs it
	for _, h := range hooks {
		if err := runHook(ctx, l, h, state); err != nil {
			return err
		}
	}
	return editSpec(bundle, func(s map[string]any) error {
		if h, ok := s["hooks"].(map[string]any); ok {
			delete(h, "prestart")
			delete(h, "createRuntime")
		}
		return nil
	})
}

// runPoststopHooks runs the spec's poststop hooks, as runc delete would, for
// a standby task that was never restored (nerdctl releases its CNI network
// there). Errors are returned, joined; every hook runs.
func runPoststopHooks(ctx context.Context, l launch.Launcher, bundle, id, nsPath string) error {
	spec, err := readSpec(bundle)
	if err != nil {
		return err
	}
	if spec.Hooks == nil {
		return nil
	}
	state, err := hookState(spec, id, bundle, nsPath, specs.StateStopped)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range spec.Hooks.Poststop {
		if err := runHook(ctx, l, h, state); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hookState is the OCI state the shim's hooks get on stdin: the spec's
// annotations, and the namespace nerdctl's hook is to use.
func hookState(spec *specs.Spec, id, bundle, nsPath string, status specs.ContainerState) ([]byte, error) {
	annotations := map[string]string{nerdctlNetnsAnnotation: nsPath}
	for k, v := range spec.Annotations {
		annotations[k] = v
	}
	state, err := json.Marshal(specs.State{Version: spec.Version, ID: id, Status: status, Bundle: bundle, Annotations: annotations})
	if err != nil {
		return nil, fmt.Errorf("OCI state for the spec's hooks: %w", err)
	}
	return state, nil
}

// runHook runs one OCI hook through l with the state on its stdin, within
// its timeout.
func runHook(ctx context.Context, l launch.Launcher, h specs.Hook, state []byte) error {
	if h.Timeout != nil && *h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	cmd.Stdin = bytes.NewReader(state)
	if _, err := launch.Output(l, cmd); err != nil {
		return fmt.Errorf("OCI hook %s: %w", h.Path, err)
	}
	return nil
}

// editSpec rewrites the bundle's config.json through edit, generically so
// that fields this version of the spec library does not know survive.
func editSpec(bundle string, edit func(map[string]any) error) error {
	file := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read OCI spec: %w", err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("parse OCI spec %s: %w", file, err)
	}
	if err := edit(s); err != nil {
		return fmt.Errorf("OCI spec %s: %w", file, err)
	}
	out, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("OCI spec %s: %w", file, err)
	}
	tmp := file + ".rrc-tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("write OCI spec: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace OCI spec: %w", err)
	}
	return nil
}
