// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/iorrc/rrc/runtime/launch"
)

// MoveNetSysctls applies the network sysctls (net.*) of the bundle's spec
// to the network namespace at netns and removes them from the spec. runc
// restore runs inside the namespace the container is to have (see
// PrepareRestoreBundle), takes it for the host's, and refuses net.*
// sysctls there ("not allowed in host network namespace"); dockerd's spec
// always has one (net.ipv4.ip_unprivileged_port_start). CRIU does not
// restore them either: the checkpoint has no network namespace of its own.
// It returns the sysctls applied.
func MoveNetSysctls(bundle, netns string) ([]string, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("network sysctls: read bundle config: %w", err)
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("network sysctls: parse bundle config: %w", err)
	}
	var linux map[string]json.RawMessage
	if raw, ok := spec["linux"]; ok {
		if err := json.Unmarshal(raw, &linux); err != nil {
			return nil, fmt.Errorf("network sysctls: parse bundle config's linux: %w", err)
		}
	}
	var sysctl map[string]string
	if raw, ok := linux["sysctl"]; ok {
		if err := json.Unmarshal(raw, &sysctl); err != nil {
			return nil, fmt.Errorf("network sysctls: parse bundle config's sysctl: %w", err)
		}
	}
	var keys []string
	for k := range sysctl {
		if strings.HasPrefix(k, "net.") || strings.HasPrefix(k, "net/") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	sort.Strings(keys)
	if err := launch.InNetns(netns, func() error {
		for _, k := range keys {
			// /proc/sys/net shows the namespace of the thread that opens it.
			f := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(f, []byte(sysctl[k]), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", k, sysctl[k], err)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("network sysctls in %s: %w", netns, err)
	}
	applied := make([]string, len(keys))
	for i, k := range keys {
		applied[i] = k + "=" + sysctl[k]
		delete(sysctl, k)
	}
	if linux["sysctl"], err = json.Marshal(sysctl); err != nil {
		return nil, err
	}
	if spec["linux"], err = json.Marshal(linux); err != nil {
		return nil, err
	}
	if b, err = json.Marshal(spec); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return nil, fmt.Errorf("network sysctls: write bundle config: %w", err)
	}
	return applied, nil
}
