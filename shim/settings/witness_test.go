// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWitnessSettings: the [witness] table as the file gives it, and what
// is refused (settings that would leave pairs silently unfenced among them).
func TestWitnessSettings(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, toml string
		wantErr    string
		check      func(t *testing.T, w Witness)
	}{
		{name: "none: unfenced", toml: "", check: func(t *testing.T, w Witness) {
			if w.Configured() {
				t.Fatalf("configured: %+v", w)
			}
		}},
		{name: "endpoints, defaults", toml: "[witness]\nendpoints = [\"http://10.0.0.3:2379\"]\nname = \"a\"\n", check: func(t *testing.T, w Witness) {
			if !w.Configured() || w.TTL() != 2*time.Second || w.Margin() != 500*time.Millisecond || w.Holder("primary") != "a primary" {
				t.Fatalf("%+v: ttl %s margin %s holder %q", w, w.TTL(), w.Margin(), w.Holder("primary"))
			}
		}},
		{name: "ttl and margin", toml: "[witness]\nendpoints = [\"https://e:2379\"]\nlease_ttl_seconds = 3\ndrift_margin_ms = 400\nca_file = \"/etc/ca.pem\"\n", check: func(t *testing.T, w Witness) {
			if w.TTL() != 3*time.Second || w.Margin() != 400*time.Millisecond || w.CAFile != "/etc/ca.pem" {
				t.Fatalf("%+v", w)
			}
		}},
		{name: "settings without endpoints", toml: "[witness]\nlease_ttl_seconds = 2\n", wantErr: "without endpoints"},
		{name: "not a URL", toml: "[witness]\nendpoints = [\"10.0.0.3:2379\"]\n", wantErr: "not an http"},
		{name: "relative CA", toml: "[witness]\nendpoints = [\"http://e:2379\"]\nca_file = \"ca.pem\"\n", wantErr: "witness.ca_file"},
		{name: "ttl out of range", toml: "[witness]\nendpoints = [\"http://e:2379\"]\nlease_ttl_seconds = 61\n", wantErr: "outside [1, 60]"},
		{name: "margin too large", toml: "[witness]\nendpoints = [\"http://e:2379\"]\nlease_ttl_seconds = 1\ndrift_margin_ms = 700\n", wantErr: "two thirds"},
		{name: "unknown key", toml: "[witness]\nendpoint = \"http://e:2379\"\n", wantErr: "unknown setting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c.Witness)
		})
	}
}
