// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The capabilities that let a process get around an output gate in its own
// network namespace: CAP_NET_RAW sends through a packet socket, which no IP
// OUTPUT hook sees; CAP_NET_ADMIN removes the gate's rules. Only adopted
// namespaces are gated there (docs/NETFILTER.md, "Where the gate lives");
// the gate namespace of a service network is out of the container's reach.
const (
	capNetRaw   = "CAP_NET_RAW"
	capNetAdmin = "CAP_NET_ADMIN"
)

// refuseGateBypass refuses a replicated container in an adopted network
// namespace (path) whose spec grants a capability of
// capNetRaw or capNetAdmin in any set: one held only in the bounding or
// inheritable set can still be gained by executing a file with file
// capabilities. The error names each capability, the sets and the flags
// that drop them; stripping them silently would break the program that
// asked for them.
func refuseGateBypass(spec *specs.Spec, path string) error {
	var found []string
	for _, c := range []string{capNetRaw, capNetAdmin} {
		if sets := capabilitySets(spec, c); len(sets) > 0 {
			found = append(found, fmt.Sprintf("%s (%s)", c, strings.Join(sets, ", ")))
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("the spec grants %s; the container's network namespace %s is adopted, so its output gate sits inside it, "+
		"where CAP_NET_RAW sends around the gate through a packet socket and CAP_NET_ADMIN removes the gate's rules; "+
		"drop them (ctr run --cap-drop CAP_NET_RAW --cap-drop CAP_NET_ADMIN; nerdctl --cap-drop NET_RAW --cap-drop NET_ADMIN; "+
		"Kubernetes securityContext.capabilities.drop [NET_RAW, NET_ADMIN]) or set io.rrc.service-ip, whose gate namespace is out of the container's reach",
		strings.Join(found, " and "), path)
}

// capabilitySets names the capability sets of the spec's process that hold c.
func capabilitySets(spec *specs.Spec, c string) []string {
	if spec.Process == nil || spec.Process.Capabilities == nil {
		return nil
	}
	caps := spec.Process.Capabilities
	var in []string
	for _, s := range []struct {
		name string
		set  []string
	}{
		{"bounding", caps.Bounding},
		{"effective", caps.Effective},
		{"permitted", caps.Permitted},
		{"inheritable", caps.Inheritable},
		{"ambient", caps.Ambient},
	} {
		if slices.ContainsFunc(s.set, func(x string) bool { return strings.EqualFold(x, c) }) {
			in = append(in, s.name)
		}
	}
	return in
}

// refuseExecGateBypass applies refuseGateBypass to an exec's process (the
// JSON of a runtime-spec Process, as containerd sends it): a process
// started later in the container must not get what its init was refused.
func refuseExecGateBypass(process []byte, path string) error {
	var p specs.Process
	if err := json.Unmarshal(process, &p); err != nil {
		return fmt.Errorf("read the exec's process spec: %w", err)
	}
	return refuseGateBypass(&specs.Spec{Process: &p}, path)
}
