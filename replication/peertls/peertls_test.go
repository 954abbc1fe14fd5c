// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peertls_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/peertls/pki"
)

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	certs, err := pki.Generate(dir, "a.test", "b.test")
	if err != nil {
		t.Fatal(err)
	}
	a, b := certs.Hosts["a.test"], certs.Hosts["b.test"]
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		ca, cert, key string
		want          string
	}{
		{"ok", a.CAFile, a.CertFile, a.KeyFile, ""},
		{"unset", "", a.CertFile, "", "ca file: not set"},
		{"missing ca", filepath.Join(dir, "nope.pem"), a.CertFile, a.KeyFile, "reading peer TLS CA file"},
		{"junk ca", junk, a.CertFile, a.KeyFile, "no PEM certificate"},
		{"key of another cert", a.CAFile, a.CertFile, b.KeyFile, "loading peer TLS certificate"},
	}
	for _, tc := range tests {
		c, err := peertls.Load(tc.ca, tc.cert, tc.key)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if _, err := c.ServerConfig(""); err == nil {
				t.Errorf("%s: server config without a peer name", tc.name)
			}
			if _, err := c.ClientConfig(""); err == nil {
				t.Errorf("%s: client config without a peer name", tc.name)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
