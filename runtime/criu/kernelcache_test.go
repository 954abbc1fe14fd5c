// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/test/lab"
)

// TestKernelCacheWarm: Warm replaces whatever file is there with CRIU's
// cache, which a later CRIU run with Env loads instead of probing; a
// missing library or a CRIU that fails is an error, never a cache.
func TestKernelCacheWarm(t *testing.T) {
	preload, _ := lab.MemoryTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// CRIU keeps the cache only on a tmpfs.
	dir := t.TempDir()
	unmount, err := MountImageTmpfs(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	tests := []struct {
		name    string
		cache   KernelCache
		cmd     CRIUCommand
		wantErr string
	}{
		{"written", KernelCache{Preload: preload, File: filepath.Join(dir, "a.kdat")}, CRIUCommand{}, ""},
		{"stale file replaced", KernelCache{Preload: preload, File: filepath.Join(dir, "stale.kdat")}, CRIUCommand{}, ""},
		{"no library", KernelCache{File: filepath.Join(dir, "b.kdat")}, CRIUCommand{}, "no criu-written library"},
		{"criu fails", KernelCache{Preload: preload, File: filepath.Join(dir, "c.kdat")}, CRIUCommand{Argv: []string{"false"}}, "exit status 1"},
	}
	if err := os.WriteFile(filepath.Join(dir, "stale.kdat"), []byte("not a cache"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cache.Warm(ctx, tc.cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Warm = %v, want an error with %q", err, tc.wantErr)
				}
				if _, err := os.Stat(tc.cache.File); err == nil {
					t.Errorf("%s exists after a failed Warm", tc.cache.File)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(tc.cache.File)
			if err != nil || len(b) < 64 || strings.HasPrefix(string(b), "not a cache") {
				t.Fatalf("cache after Warm: %d bytes %q…, %v", len(b), b[:min(len(b), 16)], err)
			}
			// A CRIU run with Env loads it.
			log := filepath.Join(t.TempDir(), "check.log")
			c := exec.CommandContext(ctx, "criu", "check", "-v4", "-o", log)
			c.Env = append(os.Environ(), tc.cache.Env()...)
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("criu check with the cache: %v\n%s", err, out)
			}
			if l, _ := os.ReadFile(log); !strings.Contains(string(l), "Loaded kdat cache") {
				t.Errorf("CRIU did not load the cache:\n%s", launch.Tail(string(l), 2000))
			}
		})
	}
}
