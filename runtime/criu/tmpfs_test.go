// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"

	"github.com/iorrc/rrc/test/prereq"
)

// mountOptions returns the super-block options of the mount at dir.
func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 {
		t.Fatalf("%s: %d mounts, want 1", dir, len(infos))
	}
	return infos[0].VFSOptions
}

func TestMountImageTmpfs(t *testing.T) {
	prereq.Root(t, "mounting a tmpfs")
	_, err := os.Stat("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
	thp := err == nil
	for _, tc := range []struct {
		name        string
		largeFolios bool
		wantHuge    bool
	}{
		{"image tmpfs", true, thp},
		{"4 KiB pages only", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "images")
			unmount, err := mountImageTmpfs(dir, 64<<20, tc.largeFolios)
			if err != nil {
				t.Fatal(err)
			}
			opts := mountOptions(t, dir)
			if got := strings.Contains(opts, "huge=within_size"); got != tc.wantHuge {
				t.Errorf("mount options %q: huge=within_size %v, want %v", opts, got, tc.wantHuge)
			}
			if !strings.Contains(opts, "size=65536k") {
				t.Errorf("mount options %q: no size=65536k", opts)
			}
			if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), make([]byte, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unmount(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("after unmount: %s still there (%v)", dir, err)
			}
		})
	}
}
