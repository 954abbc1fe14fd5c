// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestTmpfsKeyIsSafe(t *testing.T) {
	for _, tc := range []struct{ dest, want string }{
		{"/tmp", "rrc-tmpfs-tmp"},
		{"/run/lock/", "rrc-tmpfs-run-lock"},
		{"/dev/shm", "rrc-tmpfs-dev-shm"},
		{"/my dir", ""},                      // hashed
		{"/a/../../etc", ""},                 // hashed
		{"/" + strings.Repeat("x", 200), ""}, // hashed
		{"/run/x]:/etc\nexternal mnt[y", ""}, // hashed
	} {
		k := TmpfsKey(tc.dest)
		if err := checkTmpfsKey(k); err != nil {
			t.Errorf("TmpfsKey(%q) = %q: %v", tc.dest, k, err)
		}
		if tc.want != "" && k != tc.want {
			t.Errorf("TmpfsKey(%q) = %q, want %q", tc.dest, k, tc.want)
		}
	}
	if TmpfsKey("/my dir") == TmpfsKey("/my_dir") {
		t.Error("two destinations hashed to one key")
	}
}

func TestDecodeManifest(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		wantErr    string // "": valid
	}{
		{"empty", `{}`, ""},
		{"runc's options", `{"cgroupsIgnored":true,"fileSizeValidation":true}`, ""},
		{"tmpfs", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs-tmp"},{"destination":"/proc/acpi","key":"rrc-tmpfs-proc-acpi","masked":true}]}`, ""},
		{"key with slash", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs/../../etc"}]}`, "tmpfs[0].key"},
		{"key dot-dot", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs.."}]}`, "tmpfs[0].key"},
		{"key newline", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs-x\nmanage-cgroups=full"}]}`, "tmpfs[0].key"},
		{"key NUL", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs-x\u0000"}]}`, "tmpfs[0].key"},
		{"key bracket", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs]:/etc"}]}`, "tmpfs[0].key"},
		{"key without prefix", `{"tmpfs":[{"destination":"/tmp","key":"etc"}]}`, "tmpfs[0].key"},
		{"key too long", `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs-` + strings.Repeat("x", 200) + `"}]}`, "tmpfs[0].key"},
		{"key twice", `{"tmpfs":[{"destination":"/a","key":"rrc-tmpfs-a"},{"destination":"/b","key":"rrc-tmpfs-a"}]}`, "tmpfs[1].key"},
		{"relative destination", `{"tmpfs":[{"destination":"tmp","key":"rrc-tmpfs-tmp"}]}`, "tmpfs[0].destination"},
		{"destination newline", `{"tmpfs":[{"destination":"/tmp\n","key":"rrc-tmpfs-tmp"}]}`, "tmpfs[0].destination"},
		{"not JSON", `{"tmpfs":`, "parse"},
		{"trailing data", `{} {}`, "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeManifest([]byte(tc.json))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("decode: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("decode: %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzDecodeManifest: a manifest that decodes has only keys that stay one
// file name in the work directory and one line of CRIU's configuration.
func FuzzDecodeManifest(f *testing.F) {
	for _, s := range []string{`{}`, `{"tmpfs":[{"destination":"/tmp","key":"rrc-tmpfs-tmp"}]}`,
		`{"tmpfs":[{"destination":"/x","key":"rrc-tmpfs/../x"}],"cgroupsIgnored":true}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		for _, tm := range m.Tmpfs {
			dir := "/work"
			if p := filepath.Join(dir, tm.Key); filepath.Dir(p) != dir || filepath.Base(p) != tm.Key {
				t.Fatalf("key %q leaves the directory: %s", tm.Key, p)
			}
			if strings.ContainsAny(tm.Key, "\n\r\x00[]: ") {
				t.Fatalf("key %q would break a CRIU configuration line", tm.Key)
			}
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	})
}
