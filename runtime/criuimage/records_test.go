// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestRecords(t *testing.T) {
	core := EncodeCore([]byte{1, 2, 3})
	tests := []struct {
		name string
		in   []byte
		want uint32
		ok   bool
		n    int
	}{
		{"core", core, coreMagic, true, 1},
		{"any magic", core, 0, true, 1},
		{"wrong magic", core, pagemapMagic, false, 0},
		{"short", core[:6], 0, false, 0},
		{"truncated record", core[:len(core)-1], 0, false, 0},
		{"no records", core[:8], 0, true, 0},
		{"not an image", append([]byte{0, 0, 0, 0}, core[4:]...), 0, false, 0},
		{"length beyond", binary.LittleEndian.AppendUint32(core[:8:8], 100), 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeRecords(tt.in, tt.want)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err != nil {
				return
			}
			if len(r.Entries) != tt.n {
				t.Fatalf("%d records, want %d", len(r.Entries), tt.n)
			}
			if !bytes.Equal(r.Encode(), tt.in) {
				t.Errorf("re-encoded image differs")
			}
		})
	}
	if rec, err := DecodeCore(core); err != nil || !bytes.Equal(rec, []byte{1, 2, 3}) {
		t.Errorf("DecodeCore = %v, %v", rec, err)
	}
}

func FuzzDecodeRecords(f *testing.F) {
	f.Add(EncodeCore([]byte{8, 1}))
	f.Add([]byte{0x19, 0x43, 0x56, 0x54, 0, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecords(b, 0)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Encode(), b) {
			t.Fatalf("decode/encode is not the identity")
		}
	})
}
