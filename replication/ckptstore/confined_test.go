// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iorrc/rrc/replication/wire"
)

// TestStagingWritesBeneathItsDirectory: a file of a checkpoint is created
// beneath the staging directory even when something in it is a symlink
// out (a name from the peer is checked lexically by the wire; this is the
// second line): the write fails, nothing outside changes.
func TestStagingWritesBeneathItsDirectory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, staging, outside string) // makes the trap
		path  string
	}{
		{name: "directory symlinked out", path: "sub/f", plant: func(t *testing.T, staging, outside string) {
			if err := os.Symlink(outside, filepath.Join(staging, "sub")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "file symlinked out", path: "f", plant: func(t *testing.T, staging, outside string) {
			if err := os.Symlink(filepath.Join(outside, "f"), filepath.Join(staging, "f")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			if err := os.WriteFile(filepath.Join(outside, "f"), []byte("outside"), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Open(t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.Begin(1, wire.CheckpointBegin{TotalSize: 5, FileCount: 1})
			if err != nil {
				t.Fatal(err)
			}
			tc.plant(t, st.dir, outside)
			err = st.Write(wire.CheckpointChunk{Path: tc.path, Mode: 0o600, FileSize: 5, Data: []byte("pwned")})
			if err == nil {
				t.Fatal("write through a symlink succeeded")
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			st.Abort("test")
			ents, err := os.ReadDir(outside)
			if err != nil || len(ents) != 1 {
				t.Fatalf("outside holds %v, %v; want only f", ents, err)
			}
			if b, err := os.ReadFile(filepath.Join(outside, "f")); err != nil || string(b) != "outside" {
				t.Errorf("outside f = %q, %v", b, err)
			}
		})
	}
}
