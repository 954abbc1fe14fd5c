// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package pki makes throw-away PKIs for the peer channel: a CA and one
// certificate per host name, written as PEM files (rrcctl pki, the lab, the
// tests); not for production keys.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/iorrc/rrc/replication/peertls"
)

// Files are the PEM files of one host.
type Files struct {
	CAFile, CertFile, KeyFile string
}

// Load reads the files as the peer channel's credentials.
func (f Files) Load() (*peertls.Credentials, error) {
	return peertls.Load(f.CAFile, f.CertFile, f.KeyFile)
}

// PKI is what Generate wrote.
type PKI struct {
	Dir    string
	CAFile string
	Hosts  map[string]Files // by host name
}

// Generate writes into dir a CA (ca.pem) and, for each name, a
// certificate and key (NAME.pem, NAME-key.pem) signed by it, valid for a day,
// with the name as DNS SAN (and IP SAN if it parses as an address) and both
// server and client authentication usages, since a shim both listens and
// dials.
func Generate(dir string, names ...string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating PKI directory: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	caTmpl := template("rrc test CA")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing CA certificate: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), Hosts: map[string]Files{}}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, "ca-key.pem"), caKey); err != nil {
		return nil, err
	}
	for _, name := range names {
		f, err := issue(dir, name, caCert, caKey)
		if err != nil {
			return nil, err
		}
		f.CAFile = p.CAFile
		p.Hosts[name] = f
	}
	return p, nil
}

// GenerateSelfSigned writes a self-signed certificate for name (no CA) into
// dir: what an impostor without the cluster's CA could present.
func GenerateSelfSigned(dir, name string) (Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("creating directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("generating key: %w", err)
	}
	tmpl := leafTemplate(name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Files{}, fmt.Errorf("self-signing certificate for %s: %w", name, err)
	}
	f := Files{CAFile: filepath.Join(dir, name+".pem"), CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	if err := writePEM(f.CertFile, "CERTIFICATE", der); err != nil {
		return Files{}, err
	}
	return f, writeKey(f.KeyFile, key)
}

func issue(dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (Files, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("generating key for %s: %w", name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTemplate(name), ca, &key.PublicKey, caKey)
	if err != nil {
		return Files{}, fmt.Errorf("signing certificate for %s: %w", name, err)
	}
	f := Files{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	if err := writePEM(f.CertFile, "CERTIFICATE", der); err != nil {
		return Files{}, err
	}
	return f, writeKey(f.KeyFile, key)
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"io.rrc.v1 test"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

func leafTemplate(name string) *x509.Certificate {
	t := template(name)
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if ip := net.ParseIP(name); ip != nil {
		t.IPAddresses = []net.IP{ip}
	} else {
		t.DNSNames = []string{name}
	}
	return t
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding key %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
