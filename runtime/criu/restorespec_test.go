// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteRestoreSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	spec := `{"root":{"path":"/var/lib/x/rootfs","readonly":false},"linux":{"cgroupsPath":"/ns/old","namespaces":[{"type":"network","path":"/run/b/svc"}]}}`
	if err := WriteRestoreSpec(path, []byte(spec), "/ns/restored"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var s struct {
		Root  struct{ Path string }
		Linux struct {
			CgroupsPath string
			Namespaces  []struct{ Type, Path string }
		}
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Root.Path != "rootfs" || s.Linux.CgroupsPath != "/ns/restored" || s.Linux.Namespaces[0].Path != "/run/b/svc" {
		t.Errorf("restore spec %s", b)
	}
	if err := WriteRestoreSpec(path, []byte(`{"root":{}}`), "/x"); err == nil {
		t.Error("spec without linux section accepted")
	}
}
