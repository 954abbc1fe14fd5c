// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/iorrc/rrc/replication/peertls/pki"
)

const pkiUsage = `usage: rrcctl pki -dir DIR -name NAME [-name NAME ...]

Writes a quick CA and one certificate and key per NAME for the peer channel
of io.rrc.v1, to try replication out (the demo and the lab use it):

  DIR/ca.pem, DIR/ca-key.pem         the CA
  DIR/NAME.pem, DIR/NAME-key.pem     one per NAME: a host name or an IP address,
                                     put in the certificate as DNS or IP SAN
                                     (the name io.rrc.peer-name checks)

The certificates are valid for 24 hours and the CA's key is left on disk next
to them. This is for trying io.rrc.v1 out; in production use your own PKI
(any CA whose certificates carry the host's name as SAN and both server and
client authentication usages, see docs/CONFIGURATION.md).

Flags:
`

// names is a repeatable -name flag.
type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

// pkiCmd implements `rrcctl pki`.
func pkiCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rrcctl pki", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory to write the files into (created, mode 0700)")
	var ns names
	fs.Var(&ns, "name", "host name or IP address of one peer (repeat for each host)")
	fs.Usage = func() { fmt.Fprint(stderr, pkiUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *dir == "" || len(ns) == 0 || fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	seen := map[string]bool{}
	for _, n := range ns {
		if n == "" || strings.ContainsAny(n, `/\`) || n == "." || n == ".." || n == "ca" {
			return fmt.Errorf("pki: -name %q: not a usable host name or address", n)
		}
		if seen[n] {
			return fmt.Errorf("pki: -name %q given twice", n)
		}
		seen[n] = true
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	p, err := pki.Generate(abs, ns...)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	fmt.Fprintf(stdout, "CA:  %s (key %s)\n", p.CAFile, filepath.Join(abs, "ca-key.pem"))
	for _, n := range ns {
		f := p.Hosts[n]
		fmt.Fprintf(stdout, "%s: %s %s\n", n, f.CertFile, f.KeyFile)
	}
	fmt.Fprintln(stdout, "valid 24 h; for trying io.rrc.v1 out, not for production")
	return nil
}
