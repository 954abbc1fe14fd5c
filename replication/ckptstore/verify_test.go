// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package ckptstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckpointVerify(t *testing.T) {
	files := map[string]string{"pages-1.img": "hello world", "core-1.img": "core", "fs/etc/x": "x", "fs.tar": "tar", "empty": ""}
	tests := []struct {
		name    string
		damage  func(t *testing.T, c *Checkpoint)
		corrupt bool // want ErrCorrupt
		other   bool // want another error (unreadable)
	}{
		{name: "intact", damage: func(*testing.T, *Checkpoint) {}},
		{name: "a byte flipped", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			p := filepath.Join(c.Dir, "pages-1.img")
			b, _ := os.ReadFile(p)
			b[3] ^= 0xff
			write(t, p, string(b))
		}},
		{name: "same size, other content in a nested file", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			write(t, filepath.Join(c.Dir, "fs/etc/x"), "y")
		}},
		{name: "truncated", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			if err := os.Truncate(filepath.Join(c.Dir, "core-1.img"), 1); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "file removed", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			if err := os.Remove(filepath.Join(c.Dir, "empty")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "file added", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			write(t, filepath.Join(c.Dir, "extra"), "")
		}},
		{name: "file renamed", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			if err := os.Rename(filepath.Join(c.Dir, "core-1.img"), filepath.Join(c.Dir, "core-2.img")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "mode changed", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			if err := os.Chmod(filepath.Join(c.Dir, "core-1.img"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink in place of a file", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			p := filepath.Join(c.Dir, "fs.tar")
			os.Remove(p)
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "digest in the manifest differs", corrupt: true, damage: func(t *testing.T, c *Checkpoint) {
			c.Digest[0] ^= 1
		}},
		{name: "directory gone", other: true, damage: func(t *testing.T, c *Checkpoint) {
			if err := os.RemoveAll(c.Dir); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c := commit(t, s, 3, 0, files)
			tc.damage(t, &c)
			err = c.Verify()
			switch {
			case tc.corrupt:
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Verify: %v, want %v", err, ErrCorrupt)
				}
			case tc.other:
				if err == nil || errors.Is(err, ErrCorrupt) {
					t.Fatalf("Verify: %v, want an error other than %v", err, ErrCorrupt)
				}
			default:
				if err != nil {
					t.Fatalf("Verify of an intact checkpoint: %v", err)
				}
			}
			if err != nil {
				t.Logf("Verify: %v", err)
			}
		})
	}
}

// TestVerifyAfterReopen: the checkpoint the manifest names after a restart
// of the backup verifies too (what the promotion restores).
func TestVerifyAfterReopen(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, 1, 0, map[string]string{"a.img": "aaaa"})
	commit(t, s, 2, 0, map[string]string{"a/b": "1", "a.x": "2", "a-c": "3"}) // walk order differs from canonical order
	s2, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := s2.Current()
	if !ok || c.Epoch != 2 {
		t.Fatalf("current %+v %v", c, ok)
	}
	if err := c.Verify(); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
