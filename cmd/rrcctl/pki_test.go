// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKIWritesCAAndCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var out, errOut bytes.Buffer
	if err := pkiCmd([]string{"-dir", dir, "-name", "10.0.0.11", "-name", "host-b"}, &out, &errOut); err != nil {
		t.Fatalf("pki: %v\n%s", err, errOut.String())
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "10.0.0.11.pem", "10.0.0.11-key.pem", "host-b.pem", "host-b-key.pem"} {
		p := filepath.Join(dir, f)
		if !strings.Contains(out.String(), p) {
			t.Errorf("output does not name %s:\n%s", p, out.String())
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, readable by others", f, st.Mode())
		}
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	for name, check := range map[string]func(*x509.Certificate) bool{
		"10.0.0.11": func(c *x509.Certificate) bool {
			return len(c.IPAddresses) == 1 && c.IPAddresses[0].Equal(net.ParseIP("10.0.0.11"))
		},
		"host-b": func(c *x509.Certificate) bool { return len(c.DNSNames) == 1 && c.DNSNames[0] == "host-b" },
	} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: certificate and key do not match: %v", name, err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if !check(c) {
			t.Errorf("%s: SANs DNS %v IP %v", name, c.DNSNames, c.IPAddresses)
		}
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				t.Errorf("%s: does not verify against ca.pem for usage %v: %v", name, u, err)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "host-b-key.pem")); !bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Errorf("host-b-key.pem is not a PEM private key")
	} else if blk, _ := pem.Decode(b); blk == nil {
		t.Errorf("host-b-key.pem does not decode")
	}
	if !strings.Contains(out.String(), "not for production") {
		t.Errorf("output does not say it is not for production:\n%s", out.String())
	}
}

func TestPKIUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-dir", t.TempDir()},
		{"-name", "a"},
		{"-dir", t.TempDir(), "-name", "a", "extra"},
		{"-bogus"},
	} {
		var out, errOut bytes.Buffer
		err := pkiCmd(args, &out, &errOut)
		if !errors.Is(err, errUsage) {
			t.Errorf("pki %q: err %v, want the usage", args, err)
		}
		if !strings.Contains(errOut.String(), "own PKI") {
			t.Errorf("pki %q: usage does not tell to use one's own PKI in production:\n%s", args, errOut.String())
		}
	}
	for _, args := range [][]string{
		{"-dir", t.TempDir(), "-name", "../x"},
		{"-dir", t.TempDir(), "-name", "ca"},
		{"-dir", t.TempDir(), "-name", "a", "-name", "a"},
	} {
		var out, errOut bytes.Buffer
		if err := pkiCmd(args, &out, &errOut); err == nil || errors.Is(err, errUsage) {
			t.Errorf("pki %q: err %v, want a refusal", args, err)
		}
	}
}
