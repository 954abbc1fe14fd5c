// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package witness keeps a replicated pair's ownership in etcd: a key per
// pair, attached to the owner's lease (docs/FENCING.md). At most one side
// owns the pair; the other can take it over only once the owner's lease has
// expired in etcd. It knows nothing of the engine: the engine sees it
// through replication.Fence.
package witness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"
)

// Defaults. The TTL is etcd's least with its default timing (a lease
// shorter than 1.5 election timeouts is lengthened by the server); the
// owner renews every TTL/3, so two renewals may be lost before its margin
// stops its output.
const (
	DefaultTTL    = 2 * time.Second
	DefaultPrefix = "/rrc/pairs"
	MinTTL        = time.Second
	MaxTTL        = time.Minute
	// DefaultMarginFraction of the TTL is taken off every renewal's
	// validity: the owner's clock may run fast against etcd's leader.
	DefaultMarginFraction = 4
)

// Config is one side's view of the witness.
type Config struct {
	Endpoints []string // etcd client URLs
	TLS       *tls.Config
	// TTL of the owner's lease (DefaultTTL); Margin is taken off its
	// validity on this side (TTL/DefaultMarginFraction).
	TTL    time.Duration
	Margin time.Duration
	Prefix string // keys under Prefix/<pair>/ (DefaultPrefix)
	Pair   string
	// Holder names this side in the owner key ("host-a primary"); the
	// other side's holder must differ.
	Holder string
	// DialTimeout bounds each request to etcd (TTL/3).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// WithDefaults fills what is left out.
func (c Config) WithDefaults() Config {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Margin == 0 {
		c.Margin = c.TTL / DefaultMarginFraction
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = c.TTL / 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks a config after WithDefaults.
func (c Config) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no etcd endpoints"))
	}
	if c.TTL < MinTTL || c.TTL > MaxTTL || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("lease TTL %s: whole seconds from %s to %s (etcd counts leases in seconds)", c.TTL, MinTTL, MaxTTL))
	}
	if c.Margin <= 0 || c.Margin >= c.TTL*2/3 {
		errs = append(errs, fmt.Errorf("margin %s: more than 0 and less than two thirds of the TTL %s (renewals come every third)", c.Margin, c.TTL))
	}
	if c.Pair == "" || strings.ContainsAny(c.Pair, "/") {
		errs = append(errs, fmt.Errorf("pair name %q: not empty, no slash", c.Pair))
	}
	if c.Holder == "" {
		errs = append(errs, errors.New("no holder name"))
	}
	return errors.Join(errs...)
}

// OwnerKey is the key that names the pair's owner (attached to its lease).
func (c Config) OwnerKey() string { return path.Join(c.Prefix, c.Pair, "owner") }

// DegradedKey, when present, says that the owner it names ran degraded:
// its output went out unreplicated, so the other side's checkpoints are
// stale. It has no lease: it must outlive its writer.
func (c Config) DegradedKey() string { return path.Join(c.Prefix, c.Pair, "degraded") }

// TLSFiles are the PEM files of a TLS client of etcd.
type TLSFiles struct {
	CA   string // the CA the members' certificates chain to
	Cert string // this side's client certificate and key, if etcd asks for one
	Key  string
}

// Load makes the TLS configuration; nil when no file is named (plain
// HTTP endpoints).
func (f TLSFiles) Load() (*tls.Config, error) {
	if f.CA == "" && f.Cert == "" && f.Key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("reading the witness CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("witness CA %s: no PEM certificate", f.CA)
		}
		cfg.RootCAs = pool
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("witness TLS: a client certificate needs its key and the other way round")
	}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("loading the witness client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// OwnedError says that another side owns the pair.
type OwnedError struct {
	Key, Owner string
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("the pair is owned by %q (%s)", e.Owner, e.Key)
}

// validity is how long a lease renewed with ttl, asked at sent, is
// certain on this side: from the moment the request left (etcd's leader
// restarts the lease's time when it gets it, later), less the margin.
func validity(sent time.Time, ttl, margin time.Duration) time.Time {
	if ttl <= margin {
		return time.Time{}
	}
	return sent.Add(ttl - margin)
}

// ErrClosed is Acquire's error after Close.
var ErrClosed = errors.New("witness closed")

// backoff between attempts when etcd does not answer.
func backoff(ttl time.Duration) time.Duration { return max(ttl/8, 50*time.Millisecond) }

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
