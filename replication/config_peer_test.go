// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"testing"
)

func TestExpectedPeerName(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Role: RolePrimary, Peer: "backup.lab:7700"}, "backup.lab"},
		{Config{Role: RolePrimary, Peer: "10.0.0.2:7700"}, "10.0.0.2"},
		{Config{Role: RolePrimary, Peer: "backup.lab:7700", PeerName: "b.rrc"}, "b.rrc"},
		{Config{Role: RoleBackup, Listen: ":7700"}, ""},
		{Config{Role: RoleBackup, Listen: ":7700", PeerName: "primary.lab"}, "primary.lab"},
	}
	for _, tc := range tests {
		if got := tc.cfg.ExpectedPeerName(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.cfg, got, tc.want)
		}
	}
}
