// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"path/filepath"
	"strings"
)

// RegistryPort is the port of the lab's registry on the client host.
const RegistryPort = "5000"

// RegistryAddr is the host:port of the lab's registry (Lab.Registry),
// served over HTTPS on the client host.
func (l *Lab) RegistryAddr() string { return l.IP("client") + ":" + RegistryPort }

// RegistryRef is where the registry serves the standard image ref:
// rrc.local/redis:latest is <RegistryAddr>/redis:latest.
func (l *Lab) RegistryRef(ref string) string {
	return l.RegistryAddr() + "/" + strings.TrimPrefix(ref, "rrc.local/")
}

// HostsDir is host's containerd hosts directory (ctr --hosts-dir, CRI's
// config_path), on its disk: it holds the registry's hosts.toml and the lab
// CA it names.
func (l *Lab) HostsDir(host string) string { return filepath.Join(l.Root(host), "certs.d") }
