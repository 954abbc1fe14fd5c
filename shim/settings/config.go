// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/pelletier/go-toml/v2"

	"github.com/iorrc/rrc/runtime/criu"
)

// Host-level settings of the shim: secrets and paths that belong to the
// machine, not to a container, so they come from a file and not from
// annotations.
const (
	// ConfigEnv names the file to read instead of DefaultConfigPath. The shim
	// inherits containerd's environment, so setting it for the daemon sets
	// it for the shims (the lab gives each host its own file this way).
	ConfigEnv         = "RRC_SHIM_CONFIG"
	DefaultConfigPath = "/etc/rrc/shim.toml"
)

// defaultPath is DefaultConfigPath, as a variable so that a test can see
// what a machine without the file gets, whatever the test machine has.
var defaultPath = DefaultConfigPath

// Config is the shim configuration file.
type Config struct {
	// StateDir holds what lives as long as the host: service network
	// namespaces, per-container working files. Cleaned after a crash.
	StateDir string `toml:"state_dir"`
	// ImageDir is where the primary writes CRIU images each epoch; it
	// should be a tmpfs (a checkpoint is written and read once).
	ImageDir string `toml:"image_dir"`
	// CheckpointDir is where the backup keeps committed checkpoints.
	CheckpointDir string `toml:"checkpoint_dir"`
	// CheckpointFsync makes the backup fsync every checkpoint before it
	// acknowledges it. Off by default: a checkpoint survives the shim's
	// crash either way, and the host's only matters to a backup that has
	// lost its primary's connection too; a torn checkpoint is refused by
	// the verification before a restore.
	CheckpointFsync bool `toml:"checkpoint_fsync"`
	// PeerTLS authenticates and encrypts the peer channel (invariant 5 of
	// docs/ARCHITECTURE.md).
	PeerTLS PeerTLS `toml:"peer_tls"`
	// CRIUNice is the nice value of the CRIU process that dumps: the pause is
	// CRIU's CPU time, and a busy host otherwise queues it behind other work.
	CRIUNice int `toml:"criu_nice"`
	// IncrementalMemory makes every dump after the first copy only the
	// memory the container wrote since the one before (userfaultfd
	// write-protect tracking; docs/CHECKPOINT.md). Off: every dump copies
	// all of it.
	IncrementalMemory bool `toml:"incremental_memory"`
	// CRIUWrittenLib is the library preloaded into CRIU for incremental
	// dumps (built and installed by make setup).
	CRIUWrittenLib string `toml:"criu_written_lib"`
	// UffdHelper makes the tracking userfaultfd inside the container's
	// processes (installed by make install).
	UffdHelper string `toml:"uffd_helper"`
	// MetricsAddress is where `rrcctl metrics`, the host's one metrics
	// server, serves Prometheus metrics of every replicated container.
	MetricsAddress string `toml:"metrics_address"`
	// Witness fences every replicated pair of this host with an etcd
	// cluster (docs/FENCING.md); without endpoints, pairs are unfenced.
	Witness Witness `toml:"witness"`
}

// DefaultConfig is what applies when no file exists.
func DefaultConfig() Config {
	return Config{
		StateDir:      "/run/rrc",
		ImageDir:      "/run/rrc/images",
		CheckpointDir: "/var/lib/rrc/checkpoints",
		CRIUNice:      -10,

		IncrementalMemory: true,
		CRIUWrittenLib:    "/usr/local/lib/rrc/criu-written.so",
		UffdHelper:        "/usr/local/bin/rrc-uffd",
		MetricsAddress:    "127.0.0.1:9595",
	}
}

// ConfigPath is the file the shim reads: $RRC_SHIM_CONFIG or the default.
func ConfigPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	return defaultPath
}

// LoadConfig reads path over the defaults. A missing file at the default
// path yields the defaults; a missing file that was asked for by name, an
// unknown key or a bad value is an error naming the file.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == defaultPath {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read shim configuration: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return cfg, fmt.Errorf("shim configuration %s: unknown setting: %s", path, sm.String())
		}
		return cfg, fmt.Errorf("shim configuration %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("shim configuration %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks the settings that do not need the file system.
func (c Config) Validate() error {
	var errs []error
	for _, p := range []struct{ key, v string }{
		{"state_dir", c.StateDir}, {"image_dir", c.ImageDir}, {"checkpoint_dir", c.CheckpointDir},
		{"peer_tls.ca_file", c.PeerTLS.CAFile}, {"peer_tls.cert_file", c.PeerTLS.CertFile}, {"peer_tls.key_file", c.PeerTLS.KeyFile},
		{"criu_written_lib", c.CRIUWrittenLib}, {"uffd_helper", c.UffdHelper},
	} {
		if p.v != "" && !filepath.IsAbs(p.v) {
			errs = append(errs, fmt.Errorf("%s: %q is not an absolute path", p.key, p.v))
		}
	}
	for _, p := range []struct{ key, v string }{{"state_dir", c.StateDir}, {"image_dir", c.ImageDir}, {"checkpoint_dir", c.CheckpointDir}} {
		if p.v == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty", p.key))
		}
	}
	if c.CRIUNice < -20 || c.CRIUNice > 19 {
		errs = append(errs, fmt.Errorf("criu_nice: %d is outside [-20, 19]", c.CRIUNice))
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("metrics_address: %q is not host:port: %w", c.MetricsAddress, err))
		}
	}
	if c.IncrementalMemory && (c.CRIUWrittenLib == "" || c.UffdHelper == "") {
		errs = append(errs, errors.New("incremental_memory: needs criu_written_lib and uffd_helper"))
	}
	if err := c.Witness.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	return joinErrors(errs)
}

// MemoryTracking is the Checkpointer's incremental-dump setting: nil when
// incremental_memory is off.
func (c Config) MemoryTracking() *criu.MemoryTracking {
	if !c.IncrementalMemory {
		return nil
	}
	return &criu.MemoryTracking{Preload: c.CRIUWrittenLib, Helper: []string{c.UffdHelper}}
}
