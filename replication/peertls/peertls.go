// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package peertls sets up the mutually authenticated TLS 1.3 channel between
// the two shims of a pair. The backup restores what it receives as root, so
// both ends prove who they are with a certificate from the cluster's CA, and
// each end checks that the other is the host it expects, not merely some
// holder of a CA-signed certificate.
package peertls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Credentials are a host's loaded peer TLS material.
type Credentials struct {
	roots *x509.CertPool
	cert  tls.Certificate
}

// Load reads the CA bundle, and the host's certificate and key (PEM).
func Load(caFile, certFile, keyFile string) (*Credentials, error) {
	var errs []error
	for _, f := range []struct{ name, path string }{{"ca", caFile}, {"cert", certFile}, {"key", keyFile}} {
		if f.path == "" {
			errs = append(errs, fmt.Errorf("peer TLS %s file: not set", f.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading peer TLS CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peer TLS CA file %s: no PEM certificate found", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading peer TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &Credentials{roots: roots, cert: cert}, nil
}

// ClientConfig is the configuration of the dialing side (the primary). The
// server's certificate must chain to the CA and name peerName in its SANs.
func (c *Credentials) ClientConfig(peerName string) (*tls.Config, error) {
	if peerName == "" {
		return nil, errors.New("peer TLS: no expected peer name: the server's identity cannot be checked")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      c.roots,
		Certificates: []tls.Certificate{c.cert},
		ServerName:   peerName,
	}, nil
}

// ServerConfig is the configuration of the listening side (the backup). The
// client must present a certificate that chains to the CA (with the client
// authentication usage) and names peerName in its SANs.
func (c *Credentials) ServerConfig(peerName string) (*tls.Config, error) {
	if peerName == "" {
		return nil, errors.New("peer TLS: no expected peer name: the client's identity cannot be checked")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.roots,
		Certificates: []tls.Certificate{c.cert},
		// The chain was verified by crypto/tls before this runs; what is left
		// is the identity: a CA-signed certificate of another host is refused.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			if err := leaf.VerifyHostname(peerName); err != nil {
				return fmt.Errorf("peer certificate (subject %q) is not for the expected peer %q: %w", leaf.Subject.CommonName, peerName, err)
			}
			return nil
		},
	}, nil
}
