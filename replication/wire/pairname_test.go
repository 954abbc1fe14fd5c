// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"strings"
	"testing"
	"time"
)

// pairNames: valid is "" for a DNS label, else what the error must say.
var pairNames = []struct{ name, wantErr string }{
	{"redis-1", ""},
	{"a", ""},
	{"0abc", ""},
	{strings.Repeat("a", 63), ""},
	{"", "1 to 63"},
	{strings.Repeat("a", 64), "1 to 63"},
	{".", "DNS label"},
	{"..", "DNS label"},
	{"a/b", "DNS label"},
	{"Redis", "DNS label"},
	{"a_b", "DNS label"},
	{"a.b", "DNS label"},
	{"a\nb", "DNS label"},
	{"a\x00", "DNS label"},
	{"-a", "start or end"},
	{"a-", "start or end"},
}

func TestCheckPairName(t *testing.T) {
	for _, tc := range pairNames {
		err := CheckPairName(tc.name)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckPairName(%q) = %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckPairName(%q) = %v, want an error saying %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestDecodeHelloPairName: a Hello is refused unless its pair name is a
// DNS label, whatever the sender checked.
func TestDecodeHelloPairName(t *testing.T) {
	for _, tc := range pairNames {
		if len(tc.name) > MaxPairLen {
			continue // refused by the length bound of the decoder already
		}
		b := Hello{MinVersion: 1, MaxVersion: 1, Role: RolePrimary, Mode: ModeEpoch, Heartbeat: 30 * time.Millisecond, Pair: tc.name}.Append(nil)
		h, err := DecodeHello(b)
		if (err == nil) != (tc.wantErr == "") {
			t.Errorf("pair %q: DecodeHello = %+v, %v", tc.name, h, err)
		}
		if err != nil && !strings.Contains(err.Error(), "pair") {
			t.Errorf("pair %q: error %q does not name the pair", tc.name, err)
		}
	}
}

func TestValidCheckpointPath(t *testing.T) {
	for p, want := range map[string]bool{
		"pages-1.img": true, "rootfs-diff.tar": true, "rrc-tmpfs-tmp.tar": true, "a/b/c": true,
		"": false, ".": false, "..": false, "../x": false, "a/../x": false, "/etc/passwd": false, "a//b": false,
		"a/./b": false, "a/": false, "a\\..\\b": false, "a\x00": false, "a\nb": false, "a\x7f": false,
		strings.Repeat("x", 256): false, strings.Repeat("x", 255): true,
	} {
		if got := ValidCheckpointPath(p); got != want {
			t.Errorf("ValidCheckpointPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestHelloImageDigest(t *testing.T) {
	tests := []struct {
		image, wantErr string
	}{
		{"", ""},
		{"sha256:7c3e0d5b9a1f", ""},
		{"sha512:AbC-_=.+", ""},
		{"latest", "want algorithm:encoded"},
		{"sha256:", "want algorithm:encoded"},
		{":abc", "want algorithm:encoded"},
		{"sha256:ab/../c", "character '/'"},
		{"sha256:" + strings.Repeat("a", MaxImageLen), "at most"},
	}
	for _, tc := range tests {
		err := CheckImageDigest(tc.image)
		if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("CheckImageDigest(%q) = %v, want %q", tc.image, err, tc.wantErr)
		}
		if len(tc.image) > MaxImageLen {
			continue // refused by the decoder's length bound already
		}
		h := Hello{MinVersion: 1, MaxVersion: 1, Role: RoleBackup, Mode: ModeEpoch, Heartbeat: time.Second, Pair: "p", Image: tc.image}
		got, err := DecodeHello(h.Append(nil))
		if (err == nil) != (tc.wantErr == "") || err == nil && got.Image != tc.image {
			t.Errorf("DecodeHello with image %q = %+v, %v", tc.image, got, err)
		}
	}
}
