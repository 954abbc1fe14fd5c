// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/iorrc/rrc/runtime/launch"
)

// moveNetSysctls applies the net.* sysctls of the bundle's spec to the
// backup's standby namespace at nsPath and takes them out of the spec. runc
// create writes them in the container's namespace on the primary, but the
// backup's container is only ever restored: runc restore writes no
// sysctls, and it refuses net.* ones outright because it runs inside the
// standby namespace the spec names (taskRestorer), which it then takes for
// the host's. nerdctl's specs set net.ipv4.ip_unprivileged_port_start.
func moveNetSysctls(bundle, nsPath string) error {
	spec, err := readSpec(bundle)
	if err != nil {
		return err
	}
	if spec.Linux == nil {
		return nil
	}
	var keys []string
	for k := range spec.Linux.Sysctl {
		if strings.HasPrefix(k, "net.") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	err = launch.InNetns(nsPath, func() error {
		for _, k := range keys {
			file := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(file, []byte(spec.Linux.Sysctl[k]), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s of the spec in the standby namespace: %w", k, spec.Linux.Sysctl[k], err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return editSpec(bundle, func(s map[string]any) error {
		linux, _ := s["linux"].(map[string]any)
		sysctl, _ := linux["sysctl"].(map[string]any)
		for _, k := range keys {
			delete(sysctl, k)
		}
		return nil
	})
}
