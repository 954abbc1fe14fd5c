// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
)

// TestCreateReplicatedRefusals: what is refused before anything is made,
// each error naming what to fix.
func TestCreateReplicatedRefusals(t *testing.T) {
	dir := t.TempDir()
	noTLS := filepath.Join(dir, "no-tls.toml")
	if err := os.WriteFile(noTLS, []byte("state_dir = \""+dir+"/state\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badKey, []byte("stat_dir = \"/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	primary := replication.Config{Role: replication.RolePrimary, Pair: "r1", Peer: "10.0.0.2:7100"}.WithDefaults()
	for _, tc := range []struct {
		name   string
		config string
		want   []string
	}{
		{"missing named config", filepath.Join(dir, "missing.toml"), []string{"read shim configuration", "missing.toml"}},
		{"unknown key", badKey, []string{"bad.toml", "stat_dir"}},
		{"no peer TLS", noTLS, []string{"annotation io.rrc.role=primary", "peer TLS", "no-tls.toml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(settings.ConfigEnv, tc.config)
			s := &TaskService{replicas: map[string]*replica{}}
			ctx := namespaces.WithNamespace(context.Background(), "test")
			_, err := s.createReplicated(ctx, &taskAPI.CreateTaskRequest{ID: "r1", Bundle: dir}, &specs.Spec{}, primary)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("%v is not a failed precondition", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not contain %q", err, w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
				t.Errorf("state dir made by a refused create")
			}
		})
	}
}

// TestCreateHybridRefused: hybrid mode without a service network of the
// shim's own (no gate namespace to replay in) is refused, naming the
// annotation.
func TestCreateHybridRefused(t *testing.T) {
	s := &TaskService{replicas: map[string]*replica{}}
	ctx := namespaces.WithNamespace(context.Background(), "test")
	cfg := replication.Config{Role: replication.RolePrimary, Pair: "r1", Peer: "10.0.0.2:7100", Mode: replication.ModeHybrid}.WithDefaults()
	_, err := s.createReplicated(ctx, &taskAPI.CreateTaskRequest{ID: "r1", Bundle: t.TempDir()}, &specs.Spec{}, cfg)
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "io.rrc.mode=hybrid") {
		t.Fatalf("hybrid create: %v", err)
	}
}
