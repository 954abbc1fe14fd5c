// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrepareRestoreConfig: the restore's CRIU configuration has the
// settings of every restore, then what the checkpoint's manifest asks for
// (mounting tmpfs needs root and is left to the end-to-end tests: these
// manifests carry none).
func TestPrepareRestoreConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest *checkpointManifest // nil: none written
		want     []string            // lines after the comment
	}{
		{name: "no manifest (runc checkpoint)", want: []string{"tcp-established", "network-lock skip"}},
		{name: "cgroups ignored", manifest: &checkpointManifest{CgroupsIgnored: true},
			want: []string{"tcp-established", "network-lock skip", "manage-cgroups=ignore"}},
		{name: "file sizes", manifest: &checkpointManifest{FileSizeValidation: true},
			want: []string{"tcp-established", "network-lock skip", "file-validation=filesize"}},
		{name: "both", manifest: &checkpointManifest{CgroupsIgnored: true, FileSizeValidation: true},
			want: []string{"tcp-established", "network-lock skip", "manage-cgroups=ignore", "file-validation=filesize"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			images, work := t.TempDir(), t.TempDir()
			if tc.manifest != nil {
				if err := writeManifest(images, *tc.manifest); err != nil {
					t.Fatal(err)
				}
			}
			r, err := prepareRestore(images, work, restoreSettings())
			if err != nil {
				t.Fatal(err)
			}
			if r == nil || filepath.Dir(r.criuConfig) != work {
				t.Fatalf("restore tmpfs = %+v, want a config in %s", r, work)
			}
			b, err := os.ReadFile(r.criuConfig)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "#") {
				t.Fatalf("config %q does not start with its comment", b)
			}
			if got := strings.Join(lines[1:], "|"); got != strings.Join(tc.want, "|") {
				t.Errorf("config lines %q, want %q", got, strings.Join(tc.want, "|"))
			}
		})
	}
}
