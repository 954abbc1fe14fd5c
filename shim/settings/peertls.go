// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"errors"

	"github.com/iorrc/rrc/replication/peertls"
)

// PeerTLS is the host-level TLS material of the peer channel, read from the
// shim's configuration file (not from annotations: keys are host secrets).
// The certificate must carry the host's peer name as a DNS (or IP) SAN and
// both server and client authentication usages.
type PeerTLS struct {
	CAFile   string `toml:"ca_file"`   // PEM bundle of the CA(s) that sign peer certificates
	CertFile string `toml:"cert_file"` // this host's certificate (PEM)
	KeyFile  string `toml:"key_file"`  // this host's private key (PEM)
}

// Load reads the files; errors name the setting and the file.
func (p PeerTLS) Load() (*peertls.Credentials, error) {
	if p == (PeerTLS{}) {
		return nil, errors.New("peer TLS is not configured (ca_file, cert_file, key_file): replication needs an authenticated channel")
	}
	return peertls.Load(p.CAFile, p.CertFile, p.KeyFile)
}
