// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/iorrc/rrc/replication/witness"
)

// Witness is the etcd cluster that fences this host's replicated pairs
// (docs/FENCING.md). It is host-level on purpose: with endpoints set,
// every pair this host runs is fenced, and no annotation can turn it off.
// Without endpoints the pairs are unfenced (two hosts alone).
type Witness struct {
	// Endpoints are the etcd members' client URLs (http:// or https://).
	Endpoints []string `toml:"endpoints"`
	// CAFile, CertFile, KeyFile: TLS to etcd (PEM); the CA alone when
	// etcd asks for no client certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// LeaseTTLSeconds is the owner's lease (default 2): the backup takes
	// over a dead primary no sooner than this after its last renewal.
	LeaseTTLSeconds int `toml:"lease_ttl_seconds"`
	// DriftMarginMS is taken off every renewal's validity on the owner
	// (default a quarter of the TTL): how far its clock may run fast
	// against etcd's leader over one TTL, plus scheduling delay.
	DriftMarginMS int `toml:"drift_margin_ms"`
	// Name is this host in the owner key (default the host name).
	Name string `toml:"name"`
	// Prefix of the pairs' keys (default /rrc/pairs).
	Prefix string `toml:"prefix"`
}

// Configured: pairs on this host are fenced.
func (w Witness) Configured() bool { return len(w.Endpoints) > 0 }

// Validate checks the settings that do not need the file system.
func (w Witness) Validate() error {
	if !w.Configured() {
		if w.CAFile != "" || w.CertFile != "" || w.KeyFile != "" || w.LeaseTTLSeconds != 0 || w.DriftMarginMS != 0 {
			return errors.New("witness: settings without endpoints (pairs would silently be unfenced)")
		}
		return nil
	}
	var errs []error
	for _, e := range w.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("witness.endpoints: %q is not an http:// or https:// URL", e))
		}
	}
	for _, p := range []struct{ key, v string }{{"ca_file", w.CAFile}, {"cert_file", w.CertFile}, {"key_file", w.KeyFile}} {
		if p.v != "" && !filepath.IsAbs(p.v) {
			errs = append(errs, fmt.Errorf("witness.%s: %q is not an absolute path", p.key, p.v))
		}
	}
	if w.LeaseTTLSeconds < 0 || w.DriftMarginMS < 0 {
		errs = append(errs, errors.New("witness: lease_ttl_seconds and drift_margin_ms must not be negative"))
	}
	cfg := w.config("pair", "primary").WithDefaults()
	cfg.Endpoints = []string{"x"}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("witness: %w", err))
	}
	return errors.Join(errs...)
}

// config is the witness package's config for one side of pair (without
// TLS, which Fence loads).
func (w Witness) config(pair string, role string) witness.Config {
	name := w.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	return witness.Config{
		Endpoints: w.Endpoints, Prefix: w.Prefix, Pair: pair, Holder: name + " " + role,
		TTL:    time.Duration(w.LeaseTTLSeconds) * time.Second,
		Margin: time.Duration(w.DriftMarginMS) * time.Millisecond,
	}
}

// Dial makes the etcd fence of one side of pair; nil, nil when no witness
// is configured.
func (w Witness) Dial(pair, role string, logger *slog.Logger) (*witness.Etcd, error) {
	if !w.Configured() {
		return nil, nil
	}
	cfg := w.config(pair, role)
	tlsCfg, err := witness.TLSFiles{CA: w.CAFile, Cert: w.CertFile, Key: w.KeyFile}.Load()
	if err != nil {
		return nil, err
	}
	cfg.TLS, cfg.Logger = tlsCfg, logger
	return witness.Dial(cfg)
}
