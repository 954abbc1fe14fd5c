// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package beneath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "a/b": true, ".": true, "./a": true, "a/": true, "a..b": true,
		"": false, "/a": false, "..": false, "../a": false, "a/../b": false, "a/..": false, "a\x00": false,
		strings.Repeat("a", MaxNameLen+1): false,
	} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// TestNothingOutside: every operation on a name that leads outside the
// directory, through a symlink or otherwise, fails and changes nothing
// there.
func TestNothingOutside(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs": outside, "rel": "../outside", "chain": "abs", "file": filepath.Join(outside, "f")} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"create through abs", func() error { _, err := d.OpenFile("abs/new", os.O_CREATE|os.O_WRONLY, 0o644); return err }},
		{"create through rel", func() error { _, err := d.OpenFile("rel/new", os.O_CREATE|os.O_WRONLY, 0o644); return err }},
		{"create through chain", func() error { _, err := d.OpenFile("chain/new", os.O_CREATE|os.O_WRONLY, 0o644); return err }},
		{"truncate through file", func() error { _, err := d.OpenFile("file", os.O_TRUNC|os.O_WRONLY, 0); return err }},
		{"open dot-dot", func() error { _, err := d.OpenFile("../outside/f", os.O_RDONLY, 0); return err }},
		{"mkdir through abs", func() error { return d.Mkdir("abs/d", 0o755) }},
		{"mkdir over symlink", func() error { return d.Mkdir("abs", 0o755) }},
		{"mkdirall through rel", func() error { return d.MkdirAll("rel/x/y", 0o755) }},
		{"remove through abs", func() error { return d.Remove("abs/f") }},
		{"symlink through abs", func() error { return d.Symlink("x", "abs/l") }},
		{"link to outside", func() error { return d.Link("abs/f", "h") }},
		{"link into outside", func() error { return d.Link("file", "rel/h") }},
		{"mknod through abs", func() error { return d.Mknod("abs/p", 0o010600, 0) }},
		{"meta through abs", func() error { return d.SetMeta("abs/f", Meta{Mode: 0o777}) }},
		{"lstat through rel", func() error { _, err := d.Lstat("rel/f"); return err }},
	} {
		if err := tc.op(); err == nil {
			t.Errorf("%s: succeeded", tc.name)
		}
	}
	ents, err := os.ReadDir(outside)
	if err != nil || len(ents) != 1 {
		t.Fatalf("outside holds %v, %v; want only f", ents, err)
	}
	fi, err := os.Stat(filepath.Join(outside, "f"))
	if b, rerr := os.ReadFile(filepath.Join(outside, "f")); err != nil || rerr != nil || string(b) != "outside" || fi.Mode().Perm() != 0o644 {
		t.Errorf("outside f changed: %q, %v, %v", b, fi, err)
	}
	// The symlink itself is an entry of root: SetMeta changes it, not its target.
	if err := d.SetMeta("file", Meta{UID: os.Getuid(), GID: os.Getgid(), Mode: 0o777}); err != nil {
		t.Errorf("SetMeta on a symlink: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(outside, "f")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("SetMeta on a symlink followed it: %v, %v", fi, err)
	}
}
