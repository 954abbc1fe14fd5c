// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RuncState is the part of runc's libcontainer state.json
// (<runc root>/<id>/state.json) that checkpointing needs. runc 1.1.x field
// names; we parse them ourselves rather than import libcontainer.
type RuncState struct {
	ID                  string            `json:"id"`
	InitPid             int               `json:"init_process_pid"`
	CgroupPaths         map[string]string `json:"cgroup_paths"`
	NamespacePaths      map[string]string `json:"namespace_paths"`
	ExternalDescriptors []string          `json:"external_descriptors"`
	Config              RuncConfig        `json:"config"`
}

// RuncConfig is the subset of libcontainer's configs.Config we use.
type RuncConfig struct {
	Rootfs     string          `json:"rootfs"`
	Mounts     []RuncMount     `json:"mounts"`
	Devices    []RuncDevice    `json:"devices"`
	MaskPaths  []string        `json:"mask_paths"`
	Namespaces []RuncNamespace `json:"namespaces"`
	Labels     []string        `json:"labels"`
}

// RuncMount is one libcontainer mount; Device is the fs type or "bind".
type RuncMount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Device      string `json:"device"`
}

// RuncDevice is a device node runc bind-mounts or creates in /dev.
type RuncDevice struct {
	Path string `json:"path"`
}

// RuncNamespace is a namespace of the container; Path set means joined.
type RuncNamespace struct {
	Type string `json:"type"`
	Path string `json:"path"`
}

// Bundle returns the OCI bundle directory runc recorded as a label.
func (s *RuncState) Bundle() string {
	for _, l := range s.Config.Labels {
		if v, ok := strings.CutPrefix(l, "bundle="); ok {
			return v
		}
	}
	return ""
}

// FreezerPath returns the container's freezer cgroup directory: the v1
// freezer hierarchy if present, else the v2 (unified) cgroup.
func (s *RuncState) FreezerPath() (path string, v2 bool) {
	if p := s.CgroupPaths["freezer"]; p != "" {
		return p, false
	}
	return s.CgroupPaths[""], true
}

// HasNamespace reports whether the container has its own namespace of type
// t (e.g. "NEWNET"), and the path it joined, if any.
func (s *RuncState) HasNamespace(t string) (own bool, joined string) {
	for _, ns := range s.Config.Namespaces {
		if ns.Type == t {
			return true, ns.Path
		}
	}
	return false, ""
}

// RuncStatePath is where containerd's runc shim keeps runc's state for
// container id in containerd namespace ns (runc root /run/containerd/runc/<ns>).
func RuncStatePath(runcRoot, id string) string {
	return filepath.Join(runcRoot, id, "state.json")
}

// ReadRuncState reads and parses runc's state.json for a container.
func ReadRuncState(runcRoot, id string) (*RuncState, error) {
	b, err := os.ReadFile(RuncStatePath(runcRoot, id))
	if err != nil {
		return nil, fmt.Errorf("read runc state of %s: %w", id, err)
	}
	return ParseRuncState(b)
}

// ParseRuncState parses runc's state.json.
func ParseRuncState(b []byte) (*RuncState, error) {
	var s RuncState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse runc state: %w", err)
	}
	if s.InitPid <= 0 {
		return nil, fmt.Errorf("parse runc state of %q: no init pid", s.ID)
	}
	if s.Config.Rootfs == "" {
		return nil, fmt.Errorf("parse runc state of %q: no rootfs", s.ID)
	}
	return &s, nil
}
