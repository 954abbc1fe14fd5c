// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package hybridlog

import (
	"context"
	"testing"
	"time"
)

// The per-packet work hybrid mode adds on the primary's gate: the digest of
// an output, and appending records and handing them out in batches.

func BenchmarkDigest(b *testing.B) {
	for _, size := range []int{0, 100, 1448} {
		p := tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 1, 0x18, make([]byte, size))
		b.Run(map[int]string{0: "ack", 100: "100B", 1448: "1448B"}[size], func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				Digest(p)
			}
		})
	}
}

func BenchmarkLogAppendBatch(b *testing.B) {
	in := tcp4("10.0.0.100", "10.0.0.200", 40000, 6379, 1, 0x18, make([]byte, 100))
	out := Digest(tcp4("10.0.0.200", "10.0.0.100", 6379, 40000, 1, 0x18, make([]byte, 100)))
	for _, per := range []int{1, 16} {
		b.Run(map[int]string{1: "batch1", 16: "batch16"}[per], func(b *testing.B) {
			l := NewLog(1)
			ctx := context.Background()
			now := time.Now()
			for i := 0; b.Loop(); i++ {
				if _, err := l.Append(Record{Kind: KindInput, At: now, Packet: in}); err != nil {
					b.Fatal(err)
				}
				a, _ := l.Append(Record{Kind: KindOutput, At: now, Digest: out})
				if i%per == per-1 {
					batch, _ := l.Next(ctx)
					l.Ack(batch.Last())
					_ = a
				}
			}
		})
	}
}
