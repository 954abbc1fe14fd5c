// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsPairName: a Sender or Receiver is not made for a pair name
// that is not a DNS label (the backup's store is a directory of that name).
func TestOptionsPairName(t *testing.T) {
	for _, tc := range []struct {
		pair string
		ok   bool
	}{
		{"redis-1", true}, {"", false}, {".", false}, {"..", false}, {"a/b", false}, {"Redis", false}, {strings.Repeat("a", 64), false},
	} {
		err := Options{Pair: tc.pair, PeerName: "b", Heartbeat: time.Millisecond, HeartbeatMisses: 3}.withDefaults().validate()
		if (err == nil) != tc.ok {
			t.Errorf("pair %q: validate = %v, want ok=%v", tc.pair, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "pair name") {
			t.Errorf("pair %q: error %q does not name the pair", tc.pair, err)
		}
	}
}
