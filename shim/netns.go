// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/shim/settings"
)

// netnsPlan is what the shim does with a replicated container's network
// namespace. The engine gates packets inside the container's own namespace
// and the backup keeps a standby copy of it, so a container that shares the
// host's namespace cannot be replicated: gating it would gate the host.
type netnsPlan int

const (
	// netnsCreate: io.rrc.service-ip is set; the shim makes the service
	// namespace and points the spec at it.
	netnsCreate netnsPlan = iota + 1
	// netnsAdopt: the spec names a namespace someone else made (CNI,
	// nerdctl); the shim adopts it as the service namespace.
	netnsAdopt
	// netnsHooks: the spec's hooks make its network in the fresh namespace
	// runc makes (nerdctl's CNI networks); the shim makes that namespace
	// itself (empty), points the spec at it and adopts what the hooks put
	// there: after runc create on the primary, after running them itself
	// on the backup (runCreateHooks).
	netnsHooks
)

// planNetns decides from the spec and the settings. path is the namespace
// to adopt (netnsAdopt only).
func planNetns(spec *specs.Spec, hasServiceIP bool) (plan netnsPlan, path string, err error) {
	ns, own := specNetns(spec)
	switch {
	case hasServiceIP:
		if ns != "" {
			return 0, "", fmt.Errorf("annotation %sservice-ip asks for a service network namespace but the spec already joins %s; drop one of them", settings.AnnotationPrefix, ns)
		}
		return netnsCreate, "", nil
	case ns != "":
		return netnsAdopt, ns, nil
	case networkHooks(spec):
		return netnsHooks, "", nil
	case own:
		return 0, "", fmt.Errorf("annotation %srole: the container gets a fresh network namespace that nobody can reach; set %sservice-ip (and %sservice-link) or run it in a CNI network", settings.AnnotationPrefix, settings.AnnotationPrefix, settings.AnnotationPrefix)
	default:
		return 0, "", fmt.Errorf("annotation %srole: the container shares the host's network namespace; a replicated container needs its own (set %sservice-ip or use a CNI network): its traffic is gated, and gating the host's network is not acceptable", settings.AnnotationPrefix, settings.AnnotationPrefix)
	}
}

// specNetns returns the network namespace path the spec joins, and whether
// the container has a network namespace of its own at all (a fresh one when
// the path is empty).
func specNetns(spec *specs.Spec) (path string, own bool) {
	if spec.Linux == nil {
		return "", false
	}
	for _, n := range spec.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			return n.Path, true
		}
	}
	return "", false
}

// setSpecNetns rewrites the bundle's config.json so that the container
// joins the network namespace at nsPath.
func setSpecNetns(bundle, nsPath string) error {
	return editSpec(bundle, func(s map[string]any) error { setNetns(s, nsPath); return nil })
}

// withNetns sets the path of the spec's network namespace, adding the
// namespace entry if the spec has none.
func withNetns(spec []byte, nsPath string) ([]byte, error) {
	var s map[string]any
	if err := json.Unmarshal(spec, &s); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	setNetns(s, nsPath)
	return json.Marshal(s)
}

func setNetns(s map[string]any, nsPath string) {
	linux, _ := s["linux"].(map[string]any)
	if linux == nil {
		linux = map[string]any{}
		s["linux"] = linux
	}
	nss, _ := linux["namespaces"].([]any)
	found := false
	for _, n := range nss {
		m, ok := n.(map[string]any)
		if ok && m["type"] == string(specs.NetworkNamespace) {
			m["path"] = nsPath
			found = true
		}
	}
	if !found {
		nss = append(nss, map[string]any{"type": string(specs.NetworkNamespace), "path": nsPath})
	}
	linux["namespaces"] = nss
}
