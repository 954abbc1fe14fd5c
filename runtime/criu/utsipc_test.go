// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/prereq"
)

func TestSysVIPCObjects(t *testing.T) {
	const header = "       key      shmid perms       size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime        rss       swap\n"
	for _, tc := range []struct {
		name string
		shm  string
		want string
	}{
		{"header only", header, ""},
		{"one segment", header + "  1234  0  600  8192  7  0  0  0  0  0  0  0  0  1  0  0\n", "shm"},
		{"empty file", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &sysvIPC{buf: make([]byte, 4096)}
			defer s.close()
			for _, n := range []string{"shm", "sem", "msg"} {
				content := header
				if n == "shm" {
					content = tc.shm
				}
				p := filepath.Join(dir, n)
				if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				s.files = append(s.files, f)
			}
			for range 2 { // read again from the start
				if got, err := s.objects(); err != nil || got != tc.want {
					t.Fatalf("objects() = %q, %v; want %q", got, err, tc.want)
				}
			}
		})
	}
}

// TestPrepareRestoreNamespaces makes real namespaces (root, util-linux
// thread of the test): only those the spec asks for without a path and the images lack.
func TestPrepareRestoreNamespaces(t *testing.T) {
	prereq.Root(t, "unshare of UTS and IPC namespaces")
	for _, tc := range []struct {
		name   string
		ns     []map[string]string
		images []string
		want   []string // namespaces made
	}{
		{"both made", []map[string]string{{"type": "uts"}, {"type": "ipc"}, {"type": "mount"}}, nil, []string{"uts", "ipc"}},
		{"ipc in the images", []map[string]string{{"type": "uts"}, {"type": "ipc"}}, []string{"ipcns-var-10.img"}, []string{"uts"}},
		{"joined by path", []map[string]string{{"type": "uts", "path": "/proc/1/ns/uts"}, {"type": "ipc"}}, nil, []string{"ipc"}},
		{"host's", []map[string]string{{"type": "mount"}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle, images, work := t.TempDir(), t.TempDir(), t.TempDir()
			for _, f := range tc.images {
				if err := os.WriteFile(filepath.Join(images, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			spec, _ := json.Marshal(map[string]any{"hostname": "restored-host", "linux": map[string]any{"namespaces": tc.ns}})
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := prepareRestoreNamespaces(bundle, images, work)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := r.release(); err != nil {
					t.Error(err)
				}
			}()
			b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
			var got struct {
				Linux struct{ Namespaces []map[string]string }
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			var made []string
			for _, ns := range got.Linux.Namespaces {
				if p := ns["path"]; strings.HasPrefix(p, work) {
					made = append(made, ns["type"])
					if err := sameNS("/proc/self/ns/"+ns["type"], p); err == nil {
						t.Errorf("%s: %s is our own namespace", ns["type"], p)
					}
				}
			}
			if strings.Join(made, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("namespaces made %v, want %v", made, tc.want)
			}
			if len(made) > 0 && made[0] == "uts" {
				out, err := launch.Command(context.Background(), launch.OS{}, nil, "nsenter", "--uts="+filepath.Join(work, "ns-uts"), "cat", "/proc/sys/kernel/hostname")
				if err != nil || strings.TrimSpace(out) != "restored-host" {
					t.Errorf("host name in the new namespace %q, %v", out, err)
				}
			}
			if err := r.release(); err != nil {
				t.Fatal(err)
			}
			if m, _ := filepath.Glob(filepath.Join(work, "ns-*")); len(m) > 0 {
				t.Errorf("left after release: %v", m)
			}
		})
	}
}
