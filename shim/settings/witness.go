// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
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
	if ttl := w.LeaseTTLSeconds; ttl != 0 && (ttl < 1 || ttl > 60) {
		errs = append(errs, fmt.Errorf("witness.lease_ttl_seconds: %d is outside [1, 60]", ttl))
	}
	if m := int64(w.DriftMarginMS); m != 0 && m*3 >= w.TTL().Milliseconds()*2 {
		errs = append(errs, fmt.Errorf("witness.drift_margin_ms: %d is not less than two thirds of the lease's TTL (%s; renewals come every third)", m, w.TTL()))
	}
	return errors.Join(errs...)
}

// TTL is the owner's lease (DefaultWitnessTTL when not set).
func (w Witness) TTL() time.Duration {
	if w.LeaseTTLSeconds == 0 {
		return DefaultWitnessTTL
	}
	return time.Duration(w.LeaseTTLSeconds) * time.Second
}

// Margin is taken off every renewal's validity (a quarter of the TTL when
// not set).
func (w Witness) Margin() time.Duration {
	if w.DriftMarginMS == 0 {
		return w.TTL() / 4
	}
	return time.Duration(w.DriftMarginMS) * time.Millisecond
}

// Holder names this host's side in the owner key: "<name> <role>".
func (w Witness) Holder(role string) string {
	name := w.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	return name + " " + role
}

// DefaultWitnessTTL is etcd's least lease with its default raft timing.
const DefaultWitnessTTL = 2 * time.Second
