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

// TestPrepareRestoreRefusesBadManifest: a manifest from the peer with a
// tmpfs key that is no plain name fails the restore's preparation, naming
// the field, before anything is made in the work directory.
func TestPrepareRestoreRefusesBadManifest(t *testing.T) {
	for _, key := range []string{"rrc-tmpfs/../../etc", "rrc-tmpfs-x\nmanage-cgroups=full", "rrc-tmpfs]:/etc", "..", ""} {
		images, work := t.TempDir(), t.TempDir()
		if err := writeManifest(images, checkpointManifest{Tmpfs: []TmpfsMount{{Destination: "/tmp", Key: key}}}); err != nil {
			t.Fatal(err)
		}
		_, err := prepareRestore(images, work, restoreSettings())
		if err == nil || !strings.Contains(err.Error(), "tmpfs[0].key") {
			t.Errorf("key %q: prepareRestore = %v, want an error naming tmpfs[0].key", key, err)
		}
		if ents, err := os.ReadDir(work); err != nil || len(ents) != 0 {
			t.Errorf("key %q: work directory holds %v, %v", key, ents, err)
		}
	}
}
