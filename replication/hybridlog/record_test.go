// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func sampleRecords() []Record {
	t0 := time.Unix(1_700_000_000, 123456789)
	return []Record{
		{Kind: KindInput, At: t0, Packet: tcp4("10.0.0.100", "10.0.0.200", 40000, 6379, 1000, 0x18, []byte("GET k\r\n"))},
		{Kind: KindOutput, At: t0.Add(time.Millisecond), Digest: Digest(tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 5000, 0x18, []byte("$1\r\nv\r\n")))},
		{Kind: KindInput, At: t0.Add(2 * time.Millisecond), Packet: []byte{}},
		{Kind: KindOutput, At: t0.Add(3 * time.Millisecond), Digest: Digest([]byte{0x45, 0, 0, 1})},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	recs := sampleRecords()
	b := AppendBatch(nil, recs)
	got, err := DecodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if got[i].Kind != recs[i].Kind || !got[i].At.Equal(recs[i].At) || !bytes.Equal(got[i].Packet, recs[i].Packet) || !got[i].Digest.Equal(recs[i].Digest) {
			t.Errorf("record %d: got %+v, want %+v", i, got[i], recs[i])
		}
	}
	if !bytes.Equal(AppendBatch(nil, got), b) {
		t.Error("re-encoding differs")
	}
}

func TestDecodeBatchRefuses(t *testing.T) {
	good := AppendBatch(nil, sampleRecords())
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"count only, records missing", []byte{0, 1}},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(append([]byte{}, good...), 0)},
		{"unknown kind", []byte{0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"packet longer than the batch", []byte{0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1}},
		{"packet over the limit", []byte{0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{"too many records", []byte{0xff, 0xff}},
	}
	for _, tc := range tests {
		if _, err := DecodeBatch(tc.in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
	}
	// A digest with flags that are not kept, or a sequence number outside TCP.
	bad := AppendBatch(nil, []Record{{Kind: KindOutput, Digest: OutputDigest{Proto: ProtoUDP, Src: netip.MustParseAddr("10.0.0.1")}}})
	bad[2+recordHeader+45] = 0x10 // flags
	if _, err := DecodeBatch(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("digest flags: %v", err)
	}
}

// FuzzDecodeBatch: the decoder never panics, and what it accepts encodes
// back to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, sampleRecords()))
	f.Add(AppendBatch(nil, nil))
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		recs, err := DecodeBatch(in)
		if n, cerr := CheckBatch(in); (cerr == nil) != (err == nil) || (err == nil && n != len(recs)) {
			t.Fatalf("CheckBatch %d, %v; DecodeBatch %d records, %v", n, cerr, len(recs), err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		if out := AppendBatch(nil, recs); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", in, out)
		}
	})
}
