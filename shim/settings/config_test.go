// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	// The default file as on a machine that has none.
	defer func(p string) { defaultPath = p }(defaultPath)
	defaultPath = filepath.Join(dir, "default-shim.toml")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "full", path: write("full.toml", `
state_dir = "/run/x"
image_dir = "/run/x/img"
checkpoint_dir = "/var/lib/x"
checkpoint_fsync = true
criu_nice = -5
[peer_tls]
ca_file = "/etc/rrc/ca.pem"
cert_file = "/etc/rrc/host.pem"
key_file = "/etc/rrc/host-key.pem"
`), check: func(t *testing.T, c Config) {
			if c.StateDir != "/run/x" || c.ImageDir != "/run/x/img" || c.CheckpointDir != "/var/lib/x" || c.CRIUNice != -5 || !c.CheckpointFsync ||
				c.PeerTLS.CAFile != "/etc/rrc/ca.pem" || c.PeerTLS.CertFile != "/etc/rrc/host.pem" || c.PeerTLS.KeyFile != "/etc/rrc/host-key.pem" {
				t.Fatalf("unexpected config %+v", c)
			}
		}},
		{name: "partial keeps defaults", path: write("partial.toml", "criu_nice = 0\n"), check: func(t *testing.T, c Config) {
			d := DefaultConfig()
			if c.StateDir != d.StateDir || c.CheckpointDir != d.CheckpointDir || c.CRIUNice != 0 || c.CheckpointFsync {
				t.Fatalf("unexpected config %+v", c)
			}
		}},
		{name: "missing default file", path: filepath.Join(dir, "default-shim.toml"), check: func(t *testing.T, c Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Fatalf("want defaults, got %+v", c)
			}
		}},
		{name: "missing named file", path: filepath.Join(dir, "nope.toml"), wantErr: "read shim configuration"},
		{name: "unknown key", path: write("unknown.toml", "state_dri = \"/run/x\"\n"), wantErr: "unknown setting"},
		{name: "unknown tls key", path: write("unknown-tls.toml", "[peer_tls]\nca = \"/x\"\n"), wantErr: "unknown setting"},
		{name: "relative path", path: write("rel.toml", "image_dir = \"run/img\"\n"), wantErr: "image_dir: \"run/img\" is not an absolute path"},
		{name: "empty dir", path: write("empty.toml", "state_dir = \"\"\n"), wantErr: "state_dir: must not be empty"},
		{name: "bad nice", path: write("nice.toml", "criu_nice = 40\n"), wantErr: "criu_nice"},
		{name: "incremental memory off", path: write("incr.toml", "incremental_memory = false\n"), check: func(t *testing.T, c Config) {
			if c.IncrementalMemory || c.MemoryTracking() != nil {
				t.Fatalf("incremental_memory = false: %+v, %+v", c, c.MemoryTracking())
			}
		}},
		{name: "incremental memory default", path: write("incr-default.toml", "criu_nice = 0\n"), check: func(t *testing.T, c Config) {
			m := c.MemoryTracking()
			if m == nil || m.Preload != "/usr/local/lib/rrc/criu-written.so" || len(m.Helper) != 1 || m.Helper[0] != "/usr/local/bin/rrc-uffd" {
				t.Fatalf("default memory tracking %+v", m)
			}
		}},
		{name: "relative helper", path: write("helper.toml", "uffd_helper = \"rrc-uffd\"\n"), wantErr: "uffd_helper: \"rrc-uffd\" is not an absolute path"},
		{name: "incremental without library", path: write("nolib.toml", "criu_written_lib = \"\"\n"), wantErr: "incremental_memory: needs criu_written_lib"},
		{name: "metrics address", path: write("metrics.toml", "metrics_address = \"0.0.0.0:9100\"\n"), check: func(t *testing.T, c Config) {
			if c.MetricsAddress != "0.0.0.0:9100" {
				t.Fatalf("metrics_address: %q", c.MetricsAddress)
			}
		}},
		{name: "bad metrics address", path: write("metrics-bad.toml", "metrics_address = \"9100\"\n"), wantErr: "metrics_address: \"9100\" is not host:port"},
		{name: "bad toml", path: write("bad.toml", "state_dir = \n"), wantErr: "bad.toml"},
		{name: "wrong type", path: write("type.toml", "criu_nice = \"high\"\n"), wantErr: "type.toml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestConfigPath(t *testing.T) {
	t.Setenv(ConfigEnv, "")
	if got := ConfigPath(); got != DefaultConfigPath {
		t.Fatalf("ConfigPath() = %q", got)
	}
	t.Setenv(ConfigEnv, "/run/lab/a/rrc.toml")
	if got := ConfigPath(); got != "/run/lab/a/rrc.toml" {
		t.Fatalf("ConfigPath() = %q", got)
	}
}

func TestPeerTLSLoadUnset(t *testing.T) {
	if _, err := (PeerTLS{}).Load(); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("got %v", err)
	}
}
