// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeCgroup makes a directory with the freezer files of cgroup v1 or v2.
func fakeCgroup(t *testing.T, v2 bool) string {
	dir := t.TempDir()
	files := map[string]string{"freezer.state": "THAWED\n"}
	if v2 {
		files = map[string]string{"cgroup.freeze": "0\n", "cgroup.events": "populated 1\nfrozen 0\n"}
	}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func read(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestFreezer(t *testing.T) {
	tests := []struct {
		name string
		v2   bool
		// kernel simulates the kernel completing the freeze.
		kernel    func(dir string)
		wantErr   bool
		wantAfter map[string]string // file contents after Freeze returned/failed
	}{
		{name: "v1 freezes", kernel: func(string) {}, wantAfter: map[string]string{"freezer.state": "FROZEN"}},
		{name: "v2 freezes", v2: true,
			kernel: func(dir string) {
				if err := os.WriteFile(filepath.Join(dir, "cgroup.events"), []byte("populated 1\nfrozen 1\n"), 0o644); err != nil {
					t.Errorf("the kernel's cgroup.events: %v", err)
				}
			},
			wantAfter: map[string]string{"cgroup.freeze": "1"}},
		{name: "v2 never frozen: times out and thaws", v2: true, kernel: func(string) {}, wantErr: true,
			wantAfter: map[string]string{"cgroup.freeze": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fakeCgroup(t, tt.v2)
			f, err := NewFreezer(dir)
			if err != nil {
				t.Fatal(err)
			}
			if f.V2 != tt.v2 {
				t.Fatalf("detected v2 = %v", f.V2)
			}
			f.Timeout = 50 * time.Millisecond
			go func() { time.Sleep(2 * time.Millisecond); tt.kernel(dir) }()
			err = f.Freeze(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Freeze err = %v, wantErr %v", err, tt.wantErr)
			}
			for file, want := range tt.wantAfter {
				if got := read(t, filepath.Join(dir, file)); got != want {
					t.Errorf("%s = %q, want %q", file, got, want)
				}
			}
			if !tt.wantErr {
				if err := f.Thaw(context.Background()); err != nil {
					t.Fatal(err)
				}
				file, want := "freezer.state", "THAWED"
				if tt.v2 {
					file, want = "cgroup.freeze", "0"
				}
				if got := read(t, filepath.Join(dir, file)); got != want {
					t.Errorf("after thaw %s = %q, want %q", file, got, want)
				}
			}
		})
	}
}

func TestNewFreezerNoCgroup(t *testing.T) {
	if _, err := NewFreezer(t.TempDir()); err == nil {
		t.Fatal("NewFreezer on a plain directory succeeded")
	}
}
