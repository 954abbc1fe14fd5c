package replication

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRestoreSpecAndLowerDirs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	spec := `{"root":{"path":"/var/lib/x/rootfs","readonly":false},"linux":{"cgroupsPath":"/ns/old","namespaces":[{"type":"network","path":"/run/b/svc"}]}}`
	if err := writeRestoreSpec(path, []byte(spec), "/ns/restored"); err != nil {
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
	if err := writeRestoreSpec(path, []byte(`{"root":{}}`), "/x"); err == nil {
		t.Error("spec without linux section accepted")
	}

	lower, err := LowerDirsFromMountOptions("index=off,workdir=/s/3/work,upperdir=/s/3/fs,lowerdir=/s/2/fs:/s/1/fs")
	if err != nil || strings.Join(lower, ":") != "/s/2/fs:/s/1/fs" {
		t.Errorf("lower %v, %v", lower, err)
	}
	if _, err := LowerDirsFromMountOptions("rbind,ro"); err == nil {
		t.Error("no lowerdir accepted")
	}
}
