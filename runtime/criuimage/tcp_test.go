// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"fmt"
	"os"
	"testing"
)

// testdata/files-tcp.img is CRIU 4.2.1's files.img of a process holding
// both ends of a TCP connection over 127.0.0.1:7777 and its listener.
func TestReadTCPConns(t *testing.T) {
	b, err := os.ReadFile("testdata/files-tcp.img")
	if err != nil {
		t.Fatal(err)
	}
	conns, err := DecodeTCPConns(b)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(conns)
	if want := "[{127.0.0.1:50294 127.0.0.1:7777 1} {127.0.0.1:7777 127.0.0.1:50294 1}]"; got != want {
		t.Errorf("connections %s, want %s (the listener left out)", got, want)
	}
	for _, bad := range [][]byte{nil, b[:7], append([]byte{0, 0, 0, 0}, b[4:]...), b[:len(b)-1]} {
		if _, err := DecodeTCPConns(bad); err == nil {
			t.Errorf("decoded a damaged image of %d bytes", len(bad))
		}
	}
}
